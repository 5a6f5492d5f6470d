"""A single-GPU cluster (`tessera serve --device cuda`) against the CPU engine on the real model.

Labelled gpu (tests/CMakeLists.txt: files named test_gpu_*): skipped where nvidia-smi sees no
GPU, or without the real model (TESSERA_TEST_MODEL). The reference is the in-process CPU engine
in its reference arithmetic (`tessera generate -m --exact`: float64 sums, f32 KV cache), so
its only difference from the GPU's fp32 kernels is their rounding (relative ~1e-6; the fast
CPU path, with int8 activations, differs by far more and legitimately picks other tokens at
near-ties). The served text comes through the coordinator, a worker on cuda:0 and `tessera
generate --server`, and must be identical; cuda_forward_test checks the logits themselves.
"""
import os
import shutil
import subprocess
import unittest

from cluster_harness import MODEL, TESSERA, Cluster

N_TOKENS = 24
PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Water boils at a temperature of"]


def gpu_visible():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


def generate(*args):
    r = subprocess.run([TESSERA, "generate", "--temperature", "0", "-n", str(N_TOKENS), *args],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"tessera generate {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


@unittest.skipUnless(MODEL and os.path.exists(MODEL), "TESSERA_TEST_MODEL names no model file")
@unittest.skipUnless(gpu_visible(), "no NVIDIA GPU visible (nvidia-smi -L)")
class SingleGpuServe(unittest.TestCase):
    def test_greedy_text_matches_cpu_engine(self):
        cpu = [generate("-m", MODEL, "--exact", "-p", p) for p in PROMPTS]
        with Cluster(extra=["--device", "cuda"]) as c:
            c.wait_for_line(r"cuda:0")  # the worker reports its GPU
            for prompt, want in zip(PROMPTS, cpu):
                with self.subTest(prompt=prompt):
                    self.assertEqual(generate("--server", c.addr, "-p", prompt), want)
            self.assertIn("cuda", c.output())


if __name__ == "__main__":
    unittest.main()
