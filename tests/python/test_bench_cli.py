"""`tessera bench` end to end on a small synthetic shape: the figures it prints agree with each
other, and bad options are clear errors.

Speed itself is not asserted here (that is bench/, not a timed test); what is checked is that
the roofline is the bandwidth measured during the decode over the bytes a step reads, and that
the share printed is decode over that roofline.
"""
import os
import re
import subprocess
import unittest

BIN = os.environ.get("TESSERA_BIN_DIR", "")
TESSERA = os.path.join(BIN, "cli", "tessera")


def bench(*args, timeout=300):
    return subprocess.run([TESSERA, "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def figure(pattern, text):
    m = re.search(pattern, text, re.M)
    if m is None:
        raise AssertionError(f"no line matching {pattern!r} in:\n{text}")
    return [float(g) for g in m.groups()]


class BenchCli(unittest.TestCase):
    def test_figures_are_consistent(self):
        steps, batch, prompt = 6, 2, 8
        r = bench("--synthetic", "smollm2-135m", "--layers", "2", "-p", str(prompt), "-n",
                  str(steps), "--batch", str(batch), "-t", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        (bw, probes, bw_min, bw_max) = figure(
            r"^read bandwidth\s+([0-9.]+) GB/s \(measured ([0-9]+) times during decode: "
            r"([0-9.]+)-([0-9.]+);", out)
        # Before the decode and after each stretch of it: at least twice.
        self.assertGreaterEqual(probes, 2)
        self.assertGreater(bw_min, 0.1)
        # The bandwidth the roofline used is a mean of the probes: within their range.
        self.assertLessEqual(bw_min, bw * 1.0001)
        self.assertLessEqual(bw, bw_max * 1.0001)
        # Two threads: the cores' round trip, measured next to each bandwidth probe.
        (rt, n_rt, rt_min, rt_max) = figure(
            r"^core round trip\s+([0-9]+) ns \(median of ([0-9]+), measured with the "
            r"bandwidth: ([0-9]+)-([0-9]+);", out)
        self.assertEqual(n_rt, probes)
        self.assertGreater(rt_min, 0)
        self.assertTrue(rt_min <= rt <= rt_max, out)
        (mib,) = figure(r"weights streamed per step ([0-9.]+) MiB", out)
        (decode, b, n) = figure(r"^decode\s+([0-9.]+) tokens/s\s+\(batch ([0-9]+), ([0-9]+) "
                                r"steps\)", out)
        self.assertEqual((b, n), (batch, steps))
        (roofline, share) = figure(r"^decode roofline\s+([0-9.]+) tokens/s\s+-> ([0-9]+)% of "
                                   r"roofline", out)
        self.assertAlmostEqual(share, round(100 * decode / roofline), delta=1)
        # Each step reads every weight once plus the sequences' K and V so far, so the roofline
        # is at most batch x bandwidth / weight bytes, and not far below it at this short
        # context.
        upper = batch * bw * 1e9 / (mib * 2**20)
        self.assertLessEqual(roofline, upper * 1.0001)
        self.assertGreater(roofline, 0.5 * upper)
        (prefill,) = figure(r"^prefill\s+([0-9.]+) tokens/s", out)
        self.assertGreater(prefill, 0)

    def test_one_thread_has_no_round_trip(self):
        r = bench("--synthetic", "smollm2-135m", "--layers", "1", "-p", "4", "-n", "2", "-t", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("core round trip", r.stdout)
        self.assertIn("1 threads", r.stdout)

    def test_two_threads_on_one_cpu_run_on_the_caller(self):
        # Both threads of the pool on one CPU (as when another process holds the other): the
        # pool notices its worker starting late on the caller's CPU and runs its jobs on the
        # caller alone, and bench says how many fork-joins did.
        r = subprocess.run([TESSERA, "bench", "--synthetic", "smollm2-135m", "--layers", "2",
                            "-p", "8", "-n", "60", "-t", "2"], capture_output=True, text=True,
                           timeout=300, preexec_fn=lambda: os.sched_setaffinity(0, {min(
                               os.sched_getaffinity(0))}))
        self.assertEqual(r.returncode, 0, r.stderr)
        (on_caller, runs) = figure(r"^threads\s+([0-9]+) of ([0-9]+) fork-joins ran on the "
                                   r"calling thread alone", r.stdout)
        self.assertGreater(on_caller, runs / 2, r.stdout)
        self.assertLessEqual(on_caller, runs)

    def test_bad_options_are_clear_errors(self):
        r = bench("--synthetic", "smollm2-135m", "--layers", "1", "-n", "0")
        self.assertEqual(r.returncode, 1)
        self.assertIn("-n", r.stderr)
        r = bench("--synthetic", "no-such-shape")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no-such-shape", r.stderr)
        r = bench("-m", "/nonexistent/model.gguf")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent/model.gguf", r.stderr)
        r = bench("--synthetic", "smollm2-135m", "--layers", "1", "-p", "8000", "-n", "1000")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exceeds the context length", r.stderr)


if __name__ == "__main__":
    unittest.main()
