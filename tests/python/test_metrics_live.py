"""Metrics of a running cluster, as a real Prometheus server sees them (issue 6).

Starts `tessera serve --metrics-port P` (the coordinator on P, its workers on P+1, P+2, ...),
checks each /metrics page with `promtool check metrics`, then starts Debian's Prometheus server
on loopback scraping them every second, generates text, and asks Prometheus's HTTP API for a
non-zero generated-token rate and the device memory gauges of every worker.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from cluster_harness import MODEL, Cluster, free_port, greedy  # noqa: E402

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def fetch(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@unittest.skipUnless(os.path.exists(MODEL), f"real model not found at {MODEL!r}")
@unittest.skipUnless(PROMETHEUS and PROMTOOL, "prometheus/promtool not installed (scripts/setup)")
class LiveMetrics(unittest.TestCase):
    def test_prometheus_scrapes_a_generating_cluster(self):
        metrics_port = free_port()
        # Leave room for the workers' ports after the coordinator's.
        with Cluster(tp=2, pp=1, extra=["--metrics-port", str(metrics_port)]) as c, \
                tempfile.TemporaryDirectory() as d:
            targets = [f"127.0.0.1:{metrics_port + i}" for i in range(3)]
            c.client.generate(**greedy("Warm up:", 2))
            for t in targets:
                text = fetch(f"http://{t}/metrics")
                r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, f"{t}: {r.stdout}{r.stderr}")
            config = os.path.join(d, "prometheus.yml")
            with open(config, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: tessera\n    static_configs:\n"
                        f"      - targets: {json.dumps(targets)}\n")
            prom_port = free_port()
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={d}/data",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="

                def query(q):
                    body = json.loads(fetch(api + urllib.parse.quote(q)))
                    self.assertEqual(body["status"], "success", body)
                    return body["data"]["result"]

                deadline = time.time() + 90
                rate, memory, up = [], [], []
                while time.time() < deadline:
                    # Keep generating while Prometheus scrapes, so the rate window sees tokens.
                    c.client.generate(**greedy("Count to ten: one, two,", 16))
                    try:
                        rate = query("rate(tessera_generated_tokens_total[10s])")
                        memory = query('tessera_device_memory_bytes{category="weights"}')
                        up = query("up")
                    except OSError:
                        time.sleep(0.5)  # Prometheus still starting
                        continue
                    if (rate and float(rate[0]["value"][1]) > 0 and len(memory) >= 2 and
                            len(up) == 3 and all(u["value"][1] == "1" for u in up)):
                        break
                    time.sleep(0.5)
                self.assertTrue(rate and float(rate[0]["value"][1]) > 0, rate)
                self.assertEqual(len(up), 3, up)
                self.assertTrue(all(u["value"][1] == "1" for u in up), up)
                # Each of the two workers reports its weight bytes (> 0), labelled by rank.
                ranks = {m["metric"].get("rank") for m in memory if float(m["value"][1]) > 0}
                self.assertGreaterEqual(len(ranks), 2, memory)
                kv = query("tessera_kv_cache_capacity_blocks")
                self.assertTrue(kv and float(kv[0]["value"][1]) > 0, kv)
            finally:
                prom.terminate()
                prom.wait(timeout=30)


if __name__ == "__main__":
    unittest.main()
