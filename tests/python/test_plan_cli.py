"""`tessera plan` byte figures against sums over the gguf package's view of real files.

- A sparse synthetic GGUF of the llama3-8B shape, typed as llama.cpp's Q4_0 recipe would type it
  (written here with gguf.GGUFWriter, tensor data left as a hole), must give the same bytes in
  `tessera plan --model` as the sum of gguf.GGUFReader's tensor sizes, and the same as the Q4_0
  row of `tessera plan --arch llama3-8b`.
- The --arch table's uniform recipes equal element counts x block sizes from gguf's
  GGML_QUANT_SIZES.
- On the real model with TP=2, every rank's weight bytes equal the bytes of its slices computed
  here from the reader's tensors and the printed shard ranges.
"""
import os
import re
import subprocess
import tempfile
import unittest

import numpy as np
import gguf

MODEL = os.environ.get("TESSERA_TEST_MODEL", "")
BIN = os.environ.get("TESSERA_BIN_DIR", "")
TESSERA = os.path.join(BIN, "cli", "tessera")
Q = gguf.GGMLQuantizationType


def run(*args):
    return subprocess.run([TESSERA, "plan", *args], capture_output=True, text=True, timeout=120)


def recipe_rows(stdout):
    """{name: weight bytes} from the recipe table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(F16|Q8_0|Q6_K|Q5_K_M|Q4_K_M|Q4_0|Q3_K_M|Q2_K|file)\s+(\d+)\s", line)
        if m:
            rows[m.group(1)] = int(m.group(2))
    return rows


def rank_rows(stdout):
    """Per-rank dicts from the plan table."""
    ranks = []
    for line in stdout.splitlines():
        f = line.split()
        if len(f) >= 12 and f[0].isdigit() and f[3].startswith("["):
            rng = lambda s: tuple(int(x) for x in s.strip("[)").split(","))
            ranks.append({"rank": int(f[0]), "tp": int(f[1]), "stage": int(f[2]),
                          "layers": rng(f[3]), "kv": rng(f[4]), "q": rng(f[5]), "ff": rng(f[6]),
                          "vocab": None if f[7] == "-" else rng(f[7]),
                          "weights": int(f[8]), "kv_bytes": int(f[9]), "total": int(f[10])})
    return ranks


def tensor_bytes(qtype, rows, cols):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert cols % block == 0
    return rows * (cols // block) * size


# The llama3-8b shape (Meta's config.json).
E, L, H, KV, FF, V, HD = 4096, 32, 32, 8, 14336, 128256, 128


def llama3_8b_q4_0_tensors():
    """(name, rows, cols, type) as llama.cpp's Q4_0 recipe: output Q6_K, norms F32."""
    t = [("token_embd.weight", V, E, Q.Q4_0), ("output_norm.weight", 1, E, Q.F32),
         ("output.weight", V, E, Q.Q6_K)]
    for i in range(L):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", 1, E, Q.F32), (p + "attn_q.weight", H * HD, E, Q.Q4_0),
              (p + "attn_k.weight", KV * HD, E, Q.Q4_0), (p + "attn_v.weight", KV * HD, E, Q.Q4_0),
              (p + "attn_output.weight", E, H * HD, Q.Q4_0), (p + "ffn_norm.weight", 1, E, Q.F32),
              (p + "ffn_gate.weight", FF, E, Q.Q4_0), (p + "ffn_up.weight", FF, E, Q.Q4_0),
              (p + "ffn_down.weight", E, FF, Q.Q4_0)]
    return t


def write_sparse_gguf(path, tensors):
    """A GGUF whose header and tensor infos are real and whose data section is a hole."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(8192)
    w.add_embedding_length(E)
    w.add_block_count(L)
    w.add_feed_forward_length(FF)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    data = 0
    for name, rows, cols, qtype in tensors:
        nbytes = tensor_bytes(qtype, rows, cols)
        shape = (rows, cols) if rows > 1 else (cols,)
        w.add_tensor_info(name, shape, np.float32, nbytes, raw_dtype=qtype)
        data += (nbytes + 31) // 32 * 32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    size = os.path.getsize(path)
    os.truncate(path, (size + 31) // 32 * 32 + data)


@unittest.skipUnless(os.path.exists(TESSERA), f"tessera binary not found at {TESSERA!r}")
class PlanArch(unittest.TestCase):
    def test_uniform_recipes_equal_element_counts_times_block_sizes(self):
        r = run("--arch", "llama3-8b", "--gpu-memory", "24GiB")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = recipe_rows(r.stdout)
        matrices = [(V, E)] * 2 + [(H * HD, E), (KV * HD, E), (KV * HD, E), (E, H * HD),
                                   (FF, E), (FF, E), (E, FF)] * L
        norms = (2 * L + 1) * E * 4
        for name, qtype in (("F16", Q.F16), ("Q8_0", Q.Q8_0)):
            want = sum(tensor_bytes(qtype, a, b) for a, b in matrices) + norms
            self.assertEqual(rows[name], want, name)
        want_q4_0 = sum(tensor_bytes(t, a, b) for _, a, b, t in llama3_8b_q4_0_tensors())
        self.assertEqual(rows["Q4_0"], want_q4_0)
        self.assertIn("TP1 x PP1 (1 GPU)", r.stdout)

    def test_synthetic_q4_0_file_matches_the_q4_0_row(self):
        tensors = llama3_8b_q4_0_tensors()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "llama3-8b.Q4_0.gguf")
            write_sparse_gguf(path, tensors)
            reader = gguf.GGUFReader(path)
            file_bytes = sum(int(t.n_bytes) for t in reader.tensors)
            r = run("--model", path, "--gpu-memory", "80GiB", "--gpus", "4", "--tp", "2",
                    "--pp", "2")
            self.assertEqual(r.returncode, 0, r.stderr)
        arch = run("--arch", "llama3-8b", "--gpu-memory", "80GiB")
        self.assertEqual(recipe_rows(r.stdout)["file"], file_bytes)
        self.assertEqual(recipe_rows(arch.stdout)["Q4_0"], file_bytes)
        # TP=2 x PP=2: the weights over all ranks are the file plus the embedding on the second
        # rank of stage 0 and the norms of each stage's layers (and output_norm) on both ranks.
        ranks = rank_rows(r.stdout)
        self.assertEqual(len(ranks), 4)
        embd = tensor_bytes(Q.Q4_0, V, E)
        norms = (2 * L + 1) * E * 4
        self.assertEqual(sum(k["weights"] for k in ranks), file_bytes + embd + norms)

    def test_refusals_exit_1_with_the_reason(self):
        r = run("--arch", "llama3-70b", "--gpu-memory", "24GiB", "--tp", "1", "--pp", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("short by", r.stderr)
        r = run("--arch", "llama3-8b", "--gpu-memory", "80GiB", "--gpus", "16", "--tp", "16",
                "--pp", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("exceeds the model's 8 KV heads", r.stderr)
        r = run("--arch", "llama3-8b", "--gpu-memory", "80")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no unit", r.stderr)


@unittest.skipUnless(os.path.exists(MODEL) and os.path.exists(TESSERA),
                     f"real model or binary not found ({MODEL!r}, {TESSERA!r})")
class PlanRealModel(unittest.TestCase):
    def test_file_bytes_and_tp2_rank_slices(self):
        reader = gguf.GGUFReader(MODEL)
        t = {x.name: x for x in reader.tensors}
        r = run("--model", MODEL, "--gpu-memory", "1GiB", "--reserve", "0", "--gpus", "2",
                "--tp", "2", "--pp", "1", "--context", "512")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(recipe_rows(r.stdout)["file"], sum(int(x.n_bytes) for x in reader.tensors))

        def rows_bytes(name, rows):  # whole rows of a tensor
            x = t[name]
            return int(x.n_bytes) // int(np.prod(x.shape[1:])) * rows

        def cols_bytes(name, c0, c1):  # a column slice of every row
            x = t[name]
            block, size = gguf.GGML_QUANT_SIZES[x.tensor_type]
            self.assertEqual(c0 % block, 0)
            return int(np.prod(x.shape[1:])) * (c1 - c0) // block * size

        head_dim = int(t["blk.0.attn_k.weight"].shape[1]) // 3  # 3 KV heads
        gqa = 3
        ranks = rank_rows(r.stdout)
        self.assertEqual([k["kv"] for k in ranks], [(0, 2), (2, 3)])
        self.assertEqual([k["q"] for k in ranks], [(0, 6), (6, 9)])
        for k in ranks:
            kv0, kv1 = k["kv"]
            ff0, ff1 = k["ff"]
            v0, v1 = k["vocab"]
            want = int(t["token_embd.weight"].n_bytes) + int(t["output_norm.weight"].n_bytes)
            want += rows_bytes("token_embd.weight", v1 - v0)  # tied output: its vocab slice
            for i in range(*k["layers"]):
                p = f"blk.{i}."
                want += int(t[p + "attn_norm.weight"].n_bytes) + int(t[p + "ffn_norm.weight"].n_bytes)
                want += rows_bytes(p + "attn_q.weight", (kv1 - kv0) * gqa * head_dim)
                want += rows_bytes(p + "attn_k.weight", (kv1 - kv0) * head_dim)
                want += rows_bytes(p + "attn_v.weight", (kv1 - kv0) * head_dim)
                want += cols_bytes(p + "attn_output.weight", kv0 * gqa * head_dim, kv1 * gqa * head_dim)
                want += rows_bytes(p + "ffn_gate.weight", ff1 - ff0)
                want += rows_bytes(p + "ffn_up.weight", ff1 - ff0)
                want += cols_bytes(p + "ffn_down.weight", ff0, ff1)
            self.assertEqual(k["weights"], want, k)
            # K and V, 30 layers, its KV heads x 64, 512 tokens, F16.
            self.assertEqual(k["kv_bytes"], 2 * 30 * (kv1 - kv0) * head_dim * 512 * 2)


if __name__ == "__main__":
    unittest.main()
