#!/usr/bin/env python3
"""Writes the Tessera Grafana dashboard: deploy/grafana/tessera.json and the Helm chart's copy
(deploy/helm/tessera/dashboards/tessera.json). Edit the panels here, run this script, commit
both files; tests/python/test_deploy.py fails when the JSON and this script disagree, and checks
every query against the metric names the code exports.

Variables: datasource (any Prometheus), job (the Tessera scrape jobs: coordinator and workers),
replica (replica groups). The coordinator and every worker both export the device-memory gauges
with the same labels, so memory queries take max by (...) to count each worker once.
"""
import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
JR = 'job=~"$job", replica=~"$replica"'
RATE = "$__rate_interval"


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        self.newline()
        p = {"type": "row", "title": title, "id": self._id(), "collapsed": False, "panels": [],
             "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}}
        self.y += 1
        return p

    def newline(self):
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def target(expr, legend, ref, instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def timeseries(title, desc, targets, unit, stack=False, overrides=None, minimum=None):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 5,
              "showPoints": "never", "stacking": {"mode": "normal" if stack else "none",
                                                 "group": "A"}}
    defaults = {"unit": unit, "custom": custom}
    if minimum is not None:
        defaults["min"] = minimum
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def quantiles(metric, by, sel):
    """p50/p90/p99 of a histogram, as (expr, legend) pairs."""
    group = ", ".join(["le"] + by)
    tag = "".join(f" {{{{{b}}}}}" for b in by)
    return [(f"histogram_quantile({q}, sum by ({group}) "
             f"(rate({metric}_bucket{{{sel}}}[{RATE}])))", f"p{int(q * 100)}{tag}")
            for q in (0.5, 0.9, 0.99)]


def build():
    L = Layout()
    panels = []

    panels.append(L.row("Overview"))
    panels.append(L.place({
        "type": "stat", "title": "Ready replicas", "datasource": DS,
        "description": "Replica groups ready to serve (tessera_replica_ready) out of all groups.",
        "targets": [target(f"sum(tessera_replica_ready{{{JR}}})", "ready", "A", True),
                    target(f"count(tessera_replica_ready{{{JR}}})", "configured", "B", True)],
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value",
                    "graphMode": "none", "textMode": "value_and_name"}}, 6, 4))
    panels.append(L.place({
        "type": "stat", "title": "Workers up", "datasource": DS,
        "description": "Workers registered with the coordinator (tessera_worker_up) and the "
                       "ones it lost.",
        "targets": [target(f"sum(max by (worker) (tessera_worker_up{{{JR}}}))", "up", "A", True),
                    target(f"count(max by (worker) (tessera_worker_up{{{JR}}}) == 0) or vector(0)",
                           "down", "B", True)],
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value",
                    "graphMode": "none", "textMode": "value_and_name"}}, 6, 4))
    panels.append(L.place({
        "type": "stat", "title": "Generated tokens/s", "datasource": DS,
        "description": "Tokens streamed to clients per second, all replicas.",
        "targets": [target(f"sum(rate(tessera_generated_tokens_total{{{JOB}}}[{RATE}]))",
                           "tokens/s", "A")],
        "fieldConfig": {"defaults": {"unit": "short", "decimals": 1}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value",
                    "graphMode": "area"}}, 6, 4))
    panels.append(L.place({
        "type": "stat", "title": "KV cache in use", "datasource": DS,
        "description": "Share of the KV-cache blocks in use, all selected replicas.",
        "targets": [target(f"sum(tessera_kv_cache_blocks_used{{{JR}}}) / "
                           f"sum(tessera_kv_cache_capacity_blocks{{{JR}}})", "KV", "A")],
        "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1,
                                     "thresholds": {"mode": "absolute", "steps": [
                                         {"color": "green", "value": None},
                                         {"color": "orange", "value": 0.85},
                                         {"color": "red", "value": 0.95}]}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value",
                    "graphMode": "area"}}, 6, 4))

    panels.append(L.row("Throughput"))
    panels.append(L.place(timeseries(
        "Tokens/s", "Generated tokens (streamed to clients) and prompt tokens (admitted) per "
        "second.",
        [(f"sum(rate(tessera_generated_tokens_total{{{JOB}}}[{RATE}]))", "generated"),
         (f"sum(rate(tessera_prompt_tokens_total{{{JOB}}}[{RATE}]))", "prompt")],
        "short", minimum=0), 12, 8))
    panels.append(L.place(timeseries(
        "Requests/s by outcome", "Finished requests per second: finish reasons (length, stop, "
        "eos, cancelled) and errors (invalid_argument, resource_exhausted, unavailable, "
        "deadline_exceeded, internal).",
        [(f"sum by (outcome) (rate(tessera_requests_total{{{JOB}}}[{RATE}]))", "{{outcome}}")],
        "reqps", stack=True, minimum=0), 12, 8))

    panels.append(L.row("Latency"))
    panels.append(L.place(timeseries(
        "Time to first token", "Request received to first token sampled.",
        quantiles("tessera_time_to_first_token_seconds", [], JOB), "s", minimum=0), 8, 8))
    panels.append(L.place(timeseries(
        "Inter-token latency", "Time between consecutive tokens of a sequence.",
        quantiles("tessera_inter_token_latency_seconds", [], JOB), "s", minimum=0), 8, 8))
    panels.append(L.place(timeseries(
        "Request duration and queue wait", "End-to-end request time, and the wait before a "
        "request is admitted into a batch.",
        quantiles("tessera_request_duration_seconds", [], JOB)
        + [(e, "queue " + l) for e, l in quantiles("tessera_queue_wait_seconds", [], JOB)],
        "s", minimum=0), 8, 8))

    panels.append(L.row("Scheduler"))
    panels.append(L.place(timeseries(
        "Queue depth and running sequences", "Requests waiting for admission and sequences in "
        "the running batch, per replica.",
        [(f"sum by (replica) (tessera_waiting_requests{{{JR}}})", "waiting r{{replica}}"),
         (f"sum by (replica) (tessera_running_sequences{{{JR}}})", "running r{{replica}}")],
        "short", minimum=0), 12, 8))
    panels.append(L.place(timeseries(
        "Batch size", "Mean sequences and tokens (prefill chunks + decode tokens) per scheduler "
        "step, per replica.",
        [(f"sum by (replica) (rate(tessera_batch_sequences_sum{{{JR}}}[{RATE}])) / "
          f"sum by (replica) (rate(tessera_batch_sequences_count{{{JR}}}[{RATE}]))",
          "sequences r{{replica}}"),
         (f"sum by (replica) (rate(tessera_batch_tokens_sum{{{JR}}}[{RATE}])) / "
          f"sum by (replica) (rate(tessera_batch_tokens_count{{{JR}}}[{RATE}]))",
          "tokens r{{replica}}")],
        "short", minimum=0), 12, 8))
    panels.append(L.place(timeseries(
        "KV-cache usage", "KV-cache blocks in use and in total, per replica (the coordinator "
        "admits a request only when its blocks are free).",
        [(f"sum by (replica) (tessera_kv_cache_blocks_used{{{JR}}})", "used r{{replica}}"),
         (f"sum by (replica) (tessera_kv_cache_capacity_blocks{{{JR}}})", "total r{{replica}}")],
        "short", minimum=0,
        overrides=[{"matcher": {"id": "byRegexp", "options": "total.*"},
                    "properties": [{"id": "custom.lineStyle",
                                    "value": {"fill": "dash", "dash": [10, 10]}},
                                   {"id": "custom.fillOpacity", "value": 0}]}]), 12, 8))
    panels.append(L.place(timeseries(
        "Step time by phase", "Duration of one scheduler step on a replica group: 'prefill' "
        "steps carry a prompt chunk, 'decode' steps only decode tokens.",
        quantiles("tessera_step_duration_seconds", ["phase"], JR), "s", minimum=0), 12, 8))

    panels.append(L.row("Workers"))
    mem_labels = "worker, category"
    panels.append(L.place(timeseries(
        "Device memory of $worker", "Memory in use on the worker's device, stacked by category "
        "(weights, KV cache, workspace), against the device's total (dashed).",
        [(f"max by ({mem_labels}) (tessera_device_memory_bytes{{{JR}, worker=~\"$worker\"}})",
          "{{category}}"),
         (f"max by (worker) (tessera_device_memory_total_bytes{{{JR}, worker=~\"$worker\"}})",
          "total")],
        "bytes", stack=True, minimum=0,
        overrides=[{"matcher": {"id": "byName", "options": "total"},
                    "properties": [{"id": "custom.stacking", "value": {"mode": "none"}},
                                   {"id": "custom.fillOpacity", "value": 0},
                                   {"id": "custom.lineStyle",
                                    "value": {"fill": "dash", "dash": [10, 10]}}]}]), 8, 8))
    panels[-1]["repeat"] = "worker"
    panels[-1]["repeatDirection"] = "h"
    panels[-1]["maxPerRow"] = 3
    L.newline()  # the repeated copies fill this line
    panels.append(L.place({
        "type": "bargauge", "title": "Device memory used / total", "datasource": DS,
        "description": "Share of each worker's device memory in use (all categories).",
        "targets": [target(
            f"sum by (worker) (max by ({mem_labels}) (tessera_device_memory_bytes{{{JR}}})) / "
            f"max by (worker) (tessera_device_memory_total_bytes{{{JR}}} > 0)",
            "{{worker}}", "A", True)],
        "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1,
                                     "thresholds": {"mode": "absolute", "steps": [
                                         {"color": "green", "value": None},
                                         {"color": "orange", "value": 0.85},
                                         {"color": "red", "value": 0.95}]}},
                        "overrides": []},
        "options": {"orientation": "horizontal", "displayMode": "gradient",
                    "reduceOptions": {"calcs": ["lastNotNull"]}}}, 12, 8))
    panels.append(L.place({
        "type": "state-timeline", "title": "Worker up/down", "datasource": DS,
        "description": "Each worker as the coordinator sees it (tessera_worker_up: 1 attached, "
                       "0 gone) and whether Prometheus can scrape each target (up).",
        "targets": [target(f"max by (worker) (tessera_worker_up{{{JR}}})", "{{worker}}", "A"),
                    target(f"up{{{JOB}}}", "scrape {{instance}}", "B")],
        "fieldConfig": {"defaults": {"mappings": [{"type": "value", "options": {
            "0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}],
            "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                         {"color": "green", "value": 1}]}},
            "overrides": []},
        "options": {"showValue": "never", "mergeValues": True}}, 12, 8))
    panels.append(L.place(timeseries(
        "Collective time by op", "Seconds per second each worker spends in Communicator "
        "operations (all_reduce, all_gather, send, recv): the TP/PP communication cost.",
        [(f"sum by (worker, op) (rate(tessera_collective_seconds_total{{{JR}}}[{RATE}]))",
          "{{worker}} {{op}}")],
        "percentunit", minimum=0), 12, 8))
    panels.append(L.place(timeseries(
        "Worker step time", "One step's forward pass and sampling on each worker (p50, p99).",
        [(e, l) for e, l in quantiles("tessera_worker_step_seconds", ["worker"], JR)
         if not l.startswith("p90")],
        "s", minimum=0), 12, 8))
    panels.append(L.place({
        "type": "table", "title": "Model load", "datasource": DS,
        "description": "Duration of each worker's last shard load and the weight bytes it "
                       "loaded.",
        "targets": [target(f"max by (worker) (tessera_model_load_seconds{{{JR}}})", "", "A", True),
                    target(f"max by (worker) (tessera_model_loaded_bytes_total{{{JR}}})", "",
                           "B", True)],
        "transformations": [{"id": "merge", "options": {}},
                            {"id": "organize", "options": {
                                "excludeByName": {"Time": True},
                                "renameByName": {"Value #A": "load time",
                                                 "Value #B": "bytes loaded"}}}],
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": "load time"},
             "properties": [{"id": "unit", "value": "s"}]},
            {"matcher": {"id": "byName", "options": "bytes loaded"},
             "properties": [{"id": "unit", "value": "bytes"}]}]},
        "options": {"showHeader": True}}, 12, 8))

    def query_var(name, label, query, multi=True, regex=""):
        return {"type": "query", "name": name, "label": label, "datasource": DS,
                "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
                "refresh": 2, "regex": regex, "sort": 1, "multi": multi, "includeAll": True,
                "allValue": ".*", "current": {"selected": True, "text": ["All"],
                                              "value": ["$__all"]}, "hide": 0}

    return {
        "title": "Tessera",
        "uid": "tessera-overview",
        "description": "Tessera serving cluster: throughput, latency, scheduler, KV cache and "
                       "per-worker device memory (deploy/grafana/build_dashboard.py).",
        "tags": ["tessera", "llm", "inference"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Data source",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": ""},
            query_var("job", "Job", "label_values(up, job)", regex="/.*tessera.*/"),
            query_var("replica", "Replica",
                      f"label_values(tessera_replica_ready{{{JOB}}}, replica)"),
            query_var("worker", "Worker",
                      f"label_values(tessera_device_memory_total_bytes{{{JR}}}, worker)"),
        ]},
        "panels": panels,
    }


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    text = json.dumps(build(), indent=2, sort_keys=False) + "\n"
    outs = [root / "grafana" / "tessera.json", root / "helm" / "tessera" / "dashboards" /
            "tessera.json"]
    if sys.argv[1:] == ["--print"]:
        sys.stdout.write(text)
        return
    for out in outs:
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
