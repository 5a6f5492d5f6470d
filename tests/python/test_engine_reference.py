"""The engine's logits on the real model against the independent float64 numpy reference.

The reference (llama_reference.py) runs the llama forward pass in float64 over weights
dequantized by the PyPI `gguf` package. Tessera computes in float32 and, like llama.cpp,
quantizes activations to 8-bit blocks before each quantized matmul, so it cannot match
exactly; what it must match is the model's behaviour. Bounds (measured, with margin):
- per position, the relative L2 error of the logit vector, ||l - ref|| / ||ref||, below 5%;
- the greedy next token equals the reference's wherever the reference's top-2 margin is
  clear (> 0.5 logits);
- chunked prefill gives the same logits as one-shot prefill (float32 round-off only).
Token ids come from an HF `tokenizers` BPE built from the file's vocabulary, so this test
does not depend on Tessera's tokenizer either.
"""
import os
import subprocess
import tempfile
import unittest

import numpy as np

from llama_reference import LlamaReference

MODEL = os.environ.get("TESSERA_TEST_MODEL", "")
BIN = os.environ.get("TESSERA_BIN_DIR", "")


def hf_tokenizer(reader):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    f = reader.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    merges = [tuple(bytes(f["tokenizer.ggml.merges"].parts[i]).decode().split(" ", 1))
              for i in f["tokenizer.ggml.merges"].data]
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    return tk


@unittest.skipUnless(os.path.exists(MODEL), f"real model not found at {MODEL!r}")
class EngineAgainstReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ref = LlamaReference(MODEL)
        cls.tok = hf_tokenizer(cls.ref.reader)
        cls.vocab = cls.ref.w("token_embd.weight").shape[0]

    def engine_logits(self, ids, chunk=0):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "logits.f32")
            cmd = [os.path.join(BIN, "tests", "engine_tool"), MODEL, out,
                   ",".join(map(str, ids)), "--threads", "2"]
            if chunk:
                cmd += ["--chunk", str(chunk)]
            subprocess.run(cmd, check=True)
            return np.fromfile(out, dtype=np.float32).reshape(len(ids), self.vocab)

    def check_prompt(self, text):
        ids = self.tok.encode(text).ids
        got = self.engine_logits(ids).astype(np.float64)
        want = self.ref.forward(ids)
        for pos in range(len(ids)):
            rel = np.linalg.norm(got[pos] - want[pos]) / np.linalg.norm(want[pos])
            self.assertLess(rel, 0.05, f"{text!r} position {pos}: relative error {rel:.4f}")
            top2 = np.sort(want[pos])[-2:]
            if top2[1] - top2[0] > 0.5:
                self.assertEqual(int(np.argmax(got[pos])), int(np.argmax(want[pos])),
                                 f"{text!r} position {pos}: greedy token differs")
        return ids, got

    def test_capital_of_france(self):
        ids, got = self.check_prompt("The capital of France is")
        paris = self.tok.encode(" Paris").ids
        self.assertEqual(int(np.argmax(got[-1])), paris[0])

    def test_code_and_numbers(self):
        self.check_prompt("def add(a, b):\n    return a + b  # 1234")

    def test_chunked_prefill_matches_one_shot(self):
        ids = self.tok.encode("Once upon a time, in a land far away, there lived").ids
        one_shot = self.engine_logits(ids)
        chunked = self.engine_logits(ids, chunk=4)
        np.testing.assert_allclose(chunked, one_shot, rtol=0, atol=1e-3 * np.abs(one_shot).max())


if __name__ == "__main__":
    unittest.main()
