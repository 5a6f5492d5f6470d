"""deploy/: the Helm chart, the Grafana dashboard and the Prometheus rules (issue 6).

* The chart is rendered by Helm's own Go engine (PyPI helm-python-sdk: Helm v4's SDK behind a
  C ABI) for the default values and every ci/*.yaml, and each object is validated against the
  Kubernetes OpenAPI schemas (PyPI kubernetes-validate, offline, strict: unknown fields fail).
  Cross-object checks: worker StatefulSets = replicas x (TP x PP) pods, Services select real
  pods, probes are gRPC health probes on declared ports, GPUs requested, non-root read-only
  containers, the ServiceMonitor finds the metrics ports, the workers dial a real Service.
* Every PromQL expression of the dashboard and the rules reads only metric names that
  $TESSERA_BIN_DIR/tests/metric_names prints (tessera::ExportedMetricNames()), plus histogram
  series and `up`; promtool parses each one; the rules pass `promtool check rules` and their
  unit tests (`promtool test rules`).
No network is used.
"""
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(__file__))
import deploy_promql as pq  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
CHART = os.path.join(DEPLOY, "helm", "tessera")
DASHBOARD = os.path.join(DEPLOY, "grafana", "tessera.json")
RULES = os.path.join(DEPLOY, "prometheus", "tessera-rules.yml")
PROMTOOL = shutil.which("promtool")
SETUP_HINT = "install the test tools with scripts/setup"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the first with the
# pod-affinity matchLabelKeys that ci/gpu-2x-tp4-pp2-values.yaml uses, and the newest schemas.
KUBE_MIN, KUBE_MATCH_LABEL_KEYS = "1.27.0", "1.31.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

try:
    import helm_python
except ImportError:  # reported by the tests that need it
    helm_python = None
try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None


def values_files():
    """(name, values dict) for the chart's defaults and each ci/*.yaml."""
    out = [("default", {})]
    for path in sorted(glob.glob(os.path.join(CHART, "ci", "*.yaml"))):
        with open(path) as f:
            out.append((os.path.basename(path), yaml.safe_load(f) or {}))
    return out


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                               dict) else v
    return out


def render(values, namespace="serving"):
    """The chart rendered with `values`: a list of objects (dicts)."""
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="tessera", namespace=namespace, is_install=True)
    objs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append(doc)
    return objs


def pod_templates(objs):
    """(owner, pod template) of every Deployment and StatefulSet."""
    return [(o, o["spec"]["template"]) for o in objs if o["kind"] in ("Deployment",
                                                                      "StatefulSet")]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def exported_metric_names(test):
    bin_dir = os.environ.get("TESSERA_BIN_DIR")
    if not bin_dir:
        test.skipTest("TESSERA_BIN_DIR is not set (point it at a Tessera build dir)")
    tool = os.path.join(bin_dir, "tests", "metric_names")
    test.assertTrue(os.path.exists(tool), f"{tool} is missing: build the metric_names target")
    names = subprocess.run([tool], check=True, capture_output=True, text=True).stdout.split()
    test.assertGreater(len(names), 10, f"{tool} printed too few names: {names}")
    return set(names)


def dashboard_exprs(dash):
    """(where, PromQL) of every panel target and every variable query of the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel '{p['title']}' {t['refId']}", t["expr"]))
            walk(p.get("panels", []))
    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", pq.variable_query_expr(q)))
    return out


def rules_exprs(rules):
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
            for g in rules["groups"] for r in g["rules"]]


def promtool_parses(test, exprs):
    """Runs `promtool check rules` on recording rules holding `exprs` (with Grafana's variables
    substituted)."""
    rules = {"groups": [{"name": "parse", "rules": [
        {"record": f"tessera:check:{i}", "expr": pq.for_promtool(e)}
        for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        r = subprocess.run([PROMTOOL, "check", "rules", f.name], capture_output=True, text=True)
    test.assertEqual(r.returncode, 0, f"promtool rejects an expression:\n{r.stdout}{r.stderr}")


class PromqlLexer(unittest.TestCase):
    """The name extractor itself, so the name checks below cannot pass vacuously."""

    def test_finds_metric_names_and_skips_functions_labels_and_keywords(self):
        expr = ('histogram_quantile(0.9, sum by (le, phase) (rate(tessera_step_duration_seconds_'
                'bucket{job=~"$job", phase="decode"}[$__rate_interval]))) / on (job) '
                'group_left (replica) max without (worker) (up{job="x"} offset 5m) > 1e3 '
                'or vector(0)')
        self.assertEqual(pq.metric_names(expr), {"tessera_step_duration_seconds_bucket", "up"})

    def test_flags_an_unknown_name(self):
        names = pq.metric_names("sum(rate(tessera_tokens_per_second[5m])) / tessera_x")
        self.assertEqual(names - pq.allowed_names({"tessera_generated_tokens_total"}),
                         {"tessera_tokens_per_second", "tessera_x"})

    def test_refuses_name_selectors(self):
        with self.assertRaises(ValueError):
            pq.metric_names('{__name__=~"tessera_.*"}')


@unittest.skipUnless(PROMTOOL, "promtool not found: " + SETUP_HINT)
class Dashboard(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.dash = json.load(f)

    def test_every_query_uses_exported_metrics_only(self):
        allowed = pq.allowed_names(exported_metric_names(self))
        exprs = dashboard_exprs(self.dash)
        self.assertGreater(len(exprs), 20)
        for where, expr in exprs:
            names = pq.metric_names(expr)
            self.assertTrue(names, f"{where}: no metric in {expr!r}")
            self.assertFalse(names - allowed,
                             f"{where} reads metrics the code does not export: "
                             f"{sorted(names - allowed)} in {expr!r}")

    def test_promtool_parses_every_query(self):
        promtool_parses(self, dashboard_exprs(self.dash))

    def test_has_the_panels_and_variables_of_issue_6(self):
        used = set()
        for _, e in dashboard_exprs(self.dash):
            used |= pq.metric_names(e)
        for family in ["tessera_generated_tokens_total", "tessera_prompt_tokens_total",
                       "tessera_requests_total", "tessera_time_to_first_token_seconds_bucket",
                       "tessera_inter_token_latency_seconds_bucket", "tessera_waiting_requests",
                       "tessera_running_sequences", "tessera_batch_sequences_sum",
                       "tessera_kv_cache_blocks_used", "tessera_kv_cache_capacity_blocks",
                       "tessera_device_memory_bytes", "tessera_device_memory_total_bytes",
                       "tessera_worker_up", "tessera_step_duration_seconds_bucket", "up"]:
            self.assertIn(family, used, f"no panel shows {family}")
        variables = {v["name"]: v for v in self.dash["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        for name in ("job", "replica"):
            self.assertIn(name, variables)
        ids = []
        for p in self.dash["panels"]:
            ids.append(p["id"])
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            if p["type"] != "row":
                self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
                for t in p["targets"]:
                    self.assertIn('job=~"$job"', t["expr"], f"{p['title']}: not filtered by job")
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")
        # The VRAM panel: stacked by category, per worker.
        vram = [p for p in self.dash["panels"] if p.get("repeat") == "worker"]
        self.assertEqual(len(vram), 1)
        self.assertEqual(vram[0]["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"],
                         "normal")
        self.assertIn("category", vram[0]["targets"][0]["expr"])

    def test_is_what_build_dashboard_writes_and_the_chart_ships_it(self):
        script = os.path.join(DEPLOY, "grafana", "build_dashboard.py")
        text = subprocess.run([sys.executable, script, "--print"], check=True,
                              capture_output=True, text=True).stdout
        with open(DASHBOARD) as f:
            self.assertEqual(f.read(), text, "deploy/grafana/tessera.json is stale: run "
                             "deploy/grafana/build_dashboard.py")
        with open(os.path.join(CHART, "dashboards", "tessera.json")) as f:
            self.assertEqual(f.read(), text, "the chart's dashboards/tessera.json differs: run "
                             "deploy/grafana/build_dashboard.py")


@unittest.skipUnless(PROMTOOL, "promtool not found: " + SETUP_HINT)
class PrometheusFiles(unittest.TestCase):
    def promtool(self, *args):
        r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True,
                           cwd=os.path.join(DEPLOY, "prometheus"))
        self.assertEqual(r.returncode, 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}")
        return r.stdout

    def test_rules_pass_promtool_and_their_unit_tests(self):
        self.assertIn("8 rules found", self.promtool("check", "rules", "tessera-rules.yml"))
        self.assertIn("SUCCESS", self.promtool("test", "rules", "tessera-rules.test.yml"))

    def test_rules_use_exported_metrics_only_and_cover_issue_6(self):
        allowed = pq.allowed_names(exported_metric_names(self))
        with open(RULES) as f:
            rules = yaml.safe_load(f)
        for where, expr in rules_exprs(rules):
            names = pq.metric_names(expr)
            self.assertTrue(names and not names - allowed, f"{where}: {sorted(names)}")
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
        for a in ["TesseraNoReadyReplica", "TesseraQueueSaturated", "TesseraKvCacheNearFull",
                  "TesseraVramNearFull", "TesseraWorkerDown"]:
            self.assertIn(a, alerts)

    def test_static_scrape_config(self):
        self.promtool("check", "config", "prometheus.yml")

    def test_chart_ships_the_same_rules(self):
        with open(RULES) as a, open(os.path.join(CHART, "files", "tessera-rules.yml")) as b:
            self.assertEqual(a.read(), b.read(), "copy deploy/prometheus/tessera-rules.yml to "
                             "deploy/helm/tessera/files/")


@unittest.skipUnless(PROMTOOL, "promtool not found: " + SETUP_HINT)
class Chart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if helm_python is None or kubernetes_validate is None:
            raise AssertionError("PyPI helm-python-sdk and kubernetes-validate are needed: "
                                 + SETUP_HINT)
        with open(os.path.join(CHART, "values.yaml")) as f:
            cls.defaults = yaml.safe_load(f)
        cls.rendered = {name: (deep_merge(cls.defaults, v), render(v))
                        for name, v in values_files()}

    def test_lint(self):
        report = helm_python.lint(CHART, strict=True)
        self.assertEqual(report.get("errors") or [], [], report)
        bad = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        self.assertEqual(bad, [], report)

    def test_values_files_cover_the_issue_layouts(self):
        layouts = {(v["worker"]["device"], v["layout"]["replicas"], v["layout"]["tensorParallel"],
                    v["layout"]["pipelineParallel"]) for v, _ in self.rendered.values()}
        for want in [("cpu", 1, 2, 1), ("cuda", 1, 1, 1), ("cuda", 1, 8, 1), ("cuda", 2, 4, 2)]:
            self.assertIn(want, layouts)

    def test_every_object_is_valid_kubernetes(self):
        versions = [KUBE_MIN, KUBE_MATCH_LABEL_KEYS, kubernetes_validate.latest_version()]
        for name, (values, objs) in self.rendered.items():
            needs_new = "matchLabelKeys" in json.dumps(values)
            for o in objs:
                if o["kind"] in CRD_KINDS:
                    continue
                for v in versions:
                    if needs_new and v == KUBE_MIN:
                        continue
                    with self.subTest(values=name, kind=o["kind"], obj=o["metadata"]["name"],
                                      kube=v):
                        kubernetes_validate.validate(o, v, strict=True)

    def test_rejects_bad_values(self):
        for bad in [{"layout": {"tensorParallel": 0}}, {"worker": {"device": "rocm"}},
                    {"worker": {"devcie": "cuda"}},
                    {"model": {"fetch": {"sha256": "abc"}}},
                    {"model": {"fetch": {"pipPackage": "", "url": ""}}}]:
            with self.subTest(values=bad), self.assertRaises(helm_python.HelmError):
                render(bad)

    def test_layout_and_wiring(self):
        for name, (values, objs) in self.rendered.items():
            with self.subTest(values=name):
                self.check_layout(values, objs)

    def check_layout(self, values, objs):
        lay, w = values["layout"], values["worker"]
        ranks = lay["tensorParallel"] * lay["pipelineParallel"]
        by_kind = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)
        sts = by_kind["StatefulSet"]
        self.assertEqual(len(sts), lay["replicas"])
        self.assertEqual(sorted(s["spec"]["replicas"] for s in sts), [ranks] * lay["replicas"])
        services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
        pods = pod_templates(objs)

        # Every Service selects a pod template and targets ports it declares.
        for svc in services.values():
            matched = [t for _, t in pods if selects(svc["spec"]["selector"],
                                                     t["metadata"]["labels"])]
            self.assertTrue(matched, f"Service {svc['metadata']['name']} selects no pod")
            ports = {p["name"] for t in matched for c in t["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, svc["metadata"]["name"])

        # StatefulSets: a headless Service of their own selecting exactly their pods.
        for s in sts:
            svc = services[s["spec"]["serviceName"]]
            self.assertEqual(svc["spec"].get("clusterIP"), "None")
            self.assertEqual(svc["spec"]["selector"], s["spec"]["selector"]["matchLabels"])

        coord = by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
        args = coord["args"]
        flag = lambda a, f: a[a.index(f) + 1]  # noqa: E731
        self.assertEqual(args[0], "coordinator")
        self.assertEqual(flag(args, "--tp"), str(lay["tensorParallel"]))
        self.assertEqual(flag(args, "--pp"), str(lay["pipelineParallel"]))
        self.assertEqual(flag(args, "--replicas"), str(lay["replicas"]))
        model = f"{values['model']['mountPath']}/{values['model']['file']}"
        self.assertEqual(flag(args, "--model"), model)

        for owner, t in pods:
            spec = t["spec"]
            self.assertTrue(spec["securityContext"]["runAsNonRoot"])
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c["securityContext"]
                self.assertTrue(sc["readOnlyRootFilesystem"], c["name"])
                self.assertFalse(sc["allowPrivilegeEscalation"], c["name"])
                mounts = {m["mountPath"] for m in c["volumeMounts"]}
                self.assertIn("/tmp", mounts, f"{c['name']}: no writable /tmp")
            volumes = {v["name"]: v for v in spec["volumes"]}
            if values["model"]["existingClaim"]:
                self.assertEqual(volumes["model"]["persistentVolumeClaim"],
                                 {"claimName": values["model"]["existingClaim"],
                                  "readOnly": True})
                self.assertNotIn("initContainers", spec)
            else:
                self.assertIn("emptyDir", volumes["model"])
                fetch = spec["initContainers"][0]
                self.assertEqual(fetch["name"], "fetch-model")
                self.assertIn(values["model"]["fetch"]["sha256"], fetch["args"])
                self.assertIn(volumes["fetch-script"]["configMap"]["name"],
                              {c["metadata"]["name"] for c in by_kind["ConfigMap"]})
            main = spec["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in main["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                self.assertIn(main[probe]["grpc"]["port"], ports.values(), probe)
            if owner["kind"] == "StatefulSet":
                self.check_worker(values, spec, main, ports, services)

        if values["metrics"]["serviceMonitor"]["enabled"]:
            sm = by_kind["ServiceMonitor"][0]["spec"]
            scraped = [s for s in services.values()
                       if selects(sm["selector"]["matchLabels"], s["metadata"]["labels"])]
            self.assertEqual(len(scraped), 1 + lay["replicas"], "coordinator + worker groups")
            for s in scraped:
                self.assertIn(sm["endpoints"][0]["port"], [p["name"] for p in s["spec"]["ports"]])
                self.assertIn(sm["jobLabel"], s["metadata"]["labels"])
        else:
            self.assertNotIn("ServiceMonitor", by_kind)
        if values["metrics"]["prometheusRule"]["enabled"]:
            spec = by_kind["PrometheusRule"][0]["spec"]
            with open(RULES) as f:
                self.assertEqual(spec["groups"], yaml.safe_load(f)["groups"])
            with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
                yaml.safe_dump(spec, f)
                f.flush()
                r = subprocess.run([PROMTOOL, "check", "rules", f.name], capture_output=True,
                                   text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        if values["metrics"]["dashboard"]["enabled"]:
            cm = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]
            self.assertEqual(len(cm), 1)
            for k, v in values["metrics"]["dashboard"]["labels"].items():
                self.assertEqual(cm[0]["metadata"]["labels"][k], v)
            with open(DASHBOARD) as f:
                self.assertEqual(json.loads(cm[0]["data"]["tessera.json"]), json.load(f))

    def check_worker(self, values, spec, main, ports, services):
        w = values["worker"]
        args = main["args"]
        flag = lambda f: args[args.index(f) + 1]  # noqa: E731
        self.assertEqual(args[0], "worker")
        # The worker dials NAME.NAMESPACE.svc:PORT of a Service that lists the coordinator
        # before it is ready and forwards that port.
        host, port = flag("--coordinator").rsplit(":", 1)
        svc_name, ns, _ = host.split(".", 2)
        self.assertEqual(ns, "serving")
        svc = services[svc_name]
        self.assertTrue(svc["spec"].get("publishNotReadyAddresses"))
        self.assertEqual(svc["spec"]["selector"].get("app.kubernetes.io/component"),
                         "coordinator")
        self.assertIn(int(port), [p["port"] for p in svc["spec"]["ports"]])
        self.assertEqual(flag("--advertise-host"), "$(POD_IP)")
        env = {e["name"]: e for e in main["env"]}
        self.assertEqual(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP")
        self.assertEqual(int(flag("--listen").rsplit(":", 1)[1]), ports["health"])
        self.assertIn(main["startupProbe"]["grpc"]["port"], ports.values())
        res = main["resources"]
        if w["device"] == "cuda":
            self.assertEqual(flag("--device"), "cuda:0")
            self.assertEqual(res["limits"][w["gpuResource"]], 1)
            self.assertEqual(res["requests"][w["gpuResource"]], 1)
        else:
            self.assertEqual(flag("--device"), "cpu")
            self.assertNotIn(w["gpuResource"], res.get("limits", {}))
        shm = [v for v in spec["volumes"] if v["name"] == "dshm"][0]
        self.assertEqual(shm["emptyDir"]["medium"], "Memory")
        self.assertIn("/dev/shm", [m["mountPath"] for m in main["volumeMounts"]])
        self.assertEqual(spec.get("hostIPC", False), w["hostIPC"])
        for key in ("nodeSelector", "tolerations", "affinity"):
            self.assertEqual(spec.get(key) or type(w[key])(), w[key], key)

    def test_kubernetes_sd_example_keeps_the_charts_pods(self):
        with open(os.path.join(DEPLOY, "prometheus", "prometheus-kubernetes.yml")) as f:
            config = yaml.safe_load(f)
        _, objs = self.rendered["default"]
        pods = {t["metadata"]["labels"]["app.kubernetes.io/component"]: t
                for _, t in pod_templates(objs)}
        jobs = config["scrape_configs"]
        self.assertEqual(len(jobs), 2)
        for job in jobs:
            keep = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"]
                    if r.get("action") == "keep"}
            comp = keep["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
            self.assertIn(comp, job["job_name"])
            t = pods[comp]
            self.assertEqual(t["metadata"]["labels"]["app.kubernetes.io/name"],
                             keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"])
            names = [p["name"] for p in t["spec"]["containers"][0]["ports"]]
            self.assertIn(keep["__meta_kubernetes_pod_container_port_name"], names)


if __name__ == "__main__":
    unittest.main()
