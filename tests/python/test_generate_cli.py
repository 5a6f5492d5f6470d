"""`tessera generate` end to end on the real model, and its errors on bad input.

The greedy answers are checked against facts (the model knows Paris), and the float64
reference (test_engine_reference.py) separately checks the logits behind them.
"""
import os
import subprocess
import tempfile
import unittest

import numpy as np

MODEL = os.environ.get("TESSERA_TEST_MODEL", "")
BIN = os.environ.get("TESSERA_BIN_DIR", "")
TESSERA = os.path.join(BIN, "cli", "tessera")


def run(*args, timeout=300):
    return subprocess.run([TESSERA, "generate", *args], capture_output=True, text=True,
                          timeout=timeout)


@unittest.skipUnless(os.path.exists(MODEL), f"real model not found at {MODEL!r}")
class GenerateRealModel(unittest.TestCase):
    def test_capital_of_france_continues_with_paris(self):
        r = run("-m", MODEL, "-p", "The capital of France is", "--temperature", "0", "-n", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(" Paris"), repr(r.stdout))
        self.assertIn("prompt tokens 5, generated tokens 3", r.stderr)
        self.assertIn("time to first token", r.stderr)

    def test_exact_arithmetic_runs_in_process_only(self):
        r = run("-m", MODEL, "-p", "The capital of France is", "--temperature", "0", "-n", "2",
                "--exact")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(" Paris"), repr(r.stdout))
        self.assertIn("kv cache f32", r.stderr.lower().replace(":", ""))
        r = run("--server", "127.0.0.1:1", "-p", "x", "--exact")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--exact applies to the in-process engine", r.stderr)

    def test_chat_answers_on_topic(self):
        # (Asked about France, this 135M model's two best first tokens are within 0.08 logits
        # of each other even in float64, so greedy decoding may start either way; Japan's
        # answer is unambiguous.)
        r = run("-m", MODEL, "--chat", "What is the capital of Japan?", "--temperature", "0",
                "-n", "48")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Tokyo", r.stdout)
        self.assertIn("finish: eos", r.stderr)
        # The chat template's end-of-turn token ends the answer, or the length limit does;
        # either way no control token text leaks into the stream.
        self.assertNotIn("<|im_end|>", r.stdout)
        self.assertNotIn("<|im_start|>", r.stdout)

    def test_same_seed_same_text(self):
        args = ["-m", MODEL, "-p", "Once upon a time", "-n", "24", "--temperature", "0.9",
                "--seed", "1234"]
        a, b = run(*args), run(*args)
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertEqual(a.stdout, b.stdout)
        c = run(*args[:-1], "4321")
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertNotEqual(a.stdout, c.stdout)

    def test_stop_string_is_not_streamed(self):
        r = run("-m", MODEL, "-p", "The capital of France is", "--temperature", "0", "-n", "20",
                "--stop", "Paris")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "")
        self.assertIn("finish: stop", r.stderr)

    def test_empty_prompt_is_refused(self):
        r = run("-m", MODEL, "-p", "")
        self.assertEqual(r.returncode, 1)
        self.assertIn("prompt", r.stderr)

    def test_prompt_longer_than_context_is_refused(self):
        r = run("-m", MODEL, "-p", "hello " * 9000, "-n", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("context", r.stderr)
        self.assertIn("8192", r.stderr)

    def test_bad_sampling_parameter_is_named(self):
        r = run("-m", MODEL, "-p", "hi", "--top-p", "1.5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("top_p", r.stderr)


class GenerateBadModel(unittest.TestCase):
    def test_unknown_model_path(self):
        r = run("-m", "/nonexistent/model.gguf", "-p", "hi")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/model.gguf", r.stderr)

    def test_unsupported_architecture(self):
        import gguf
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "gpt2.gguf")
            w = gguf.GGUFWriter(path, "gpt2")
            w.add_block_count(1)
            w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            r = run("-m", path, "-p", "hi")
        self.assertEqual(r.returncode, 1)
        self.assertIn("gpt2", r.stderr)


if __name__ == "__main__":
    unittest.main()
