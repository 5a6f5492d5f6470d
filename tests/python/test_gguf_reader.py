"""Cross-checks `tessera inspect --json --tensors` against the PyPI gguf package.

Files are written with gguf.GGUFWriter (every metadata value type, arrays, arrays of arrays,
several tensor types, custom alignment) and read back by both gguf.GGUFReader and tessera; the
real model (TESSERA_TEST_MODEL) is compared field by field too. Integers and strings must match
exactly; floats must match bit for bit after rounding to their stored precision (float32 values
are printed with 9 significant digits, float64 with 17, which round-trips exactly).
"""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V
except ImportError:  # pragma: no cover - the package is a test dependency
    gguf = None


def tessera_bin():
    return os.path.join(os.environ.get("TESSERA_BIN_DIR", ""), "cli", "tessera")


def inspect(path, *extra):
    proc = subprocess.run([tessera_bin(), "inspect", path, *extra], capture_output=True,
                          text=True, timeout=120)
    return proc


def inspect_json(testcase, path):
    proc = inspect(path, "--json", "--tensors")
    testcase.assertEqual(proc.returncode, 0, proc.stderr)
    return json.loads(proc.stdout)


def flatten(x):
    if isinstance(x, list):
        out = []
        for e in x:
            out.extend(flatten(e))
        return out
    return [x]


FLOAT_TYPES = {"FLOAT32": np.float32, "FLOAT64": np.float64}


def same_scalar(ours, theirs, type_name):
    if type_name in FLOAT_TYPES:
        t = FLOAT_TYPES[type_name]
        if isinstance(ours, str):  # "nan", "inf", "-inf"
            ours = float(ours)
        a, b = t(ours), t(theirs)
        return (np.isnan(a) and np.isnan(b)) or a.tobytes() == b.tobytes()
    if type_name == "BOOL":
        return bool(ours) == bool(theirs) and isinstance(ours, bool)
    return ours == theirs


@unittest.skipIf(gguf is None, "the gguf Python package is not installed")
class GgufReaderCrossCheck(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(tessera_bin()):
            self.skipTest(f"tessera binary not found at {tessera_bin()} (set TESSERA_BIN_DIR)")
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def compare_with_reader(self, path, ours):
        reader = gguf.GGUFReader(path)
        # Header.
        self.assertEqual(ours["gguf_version"], int(reader.fields["GGUF.version"].parts[0][0]))
        self.assertEqual(ours["file_size"], os.path.getsize(path))
        self.assertEqual(ours["alignment"], reader.alignment)
        self.assertEqual(ours["data_offset"], reader.data_offset)
        # Metadata: same keys in the same order, same types, same values.
        fields = [(k, f) for k, f in reader.fields.items() if not k.startswith("GGUF.")]
        self.assertEqual(list(ours["metadata"].keys()), [k for k, _ in fields])
        for key, field in fields:
            mine = ours["metadata"][key]
            self.assertEqual(mine["type"], field.types[0].name, key)
            if field.types[0] == V.ARRAY:
                self.assertEqual(mine["element_type"], field.types[1].name, key)
                leaf = field.types[-1].name
                values = flatten(mine["value"])
                theirs = field.contents()
                self.assertEqual(len(values), len(theirs), key)
                for i, (a, b) in enumerate(zip(values, theirs)):
                    self.assertTrue(same_scalar(a, b, leaf), f"{key}[{i}]: {a!r} != {b!r}")
            else:
                self.assertTrue(same_scalar(mine["value"], field.contents(), mine["type"]),
                                f"{key}: {mine['value']!r} != {field.contents()!r}")
        # Tensors: names, types, shapes (ne order), offsets, sizes.
        self.assertEqual(ours["tensor_count"], len(reader.tensors))
        self.assertEqual(len(ours["tensors"]), len(reader.tensors))
        for mine, t in zip(ours["tensors"], reader.tensors):
            self.assertEqual(mine["name"], t.name)
            self.assertEqual(mine["type"], t.tensor_type.name, t.name)
            self.assertEqual(mine["type_id"], int(t.tensor_type), t.name)
            self.assertEqual(mine["shape"], [int(d) for d in t.shape], t.name)
            self.assertEqual(mine["n_elements"], int(t.n_elements), t.name)
            self.assertEqual(mine["file_offset"], int(t.data_offset), t.name)
            self.assertEqual(mine["offset"], int(t.data_offset) - reader.data_offset, t.name)
            self.assertEqual(mine["nbytes"], int(t.n_bytes), t.name)
        # Totals, recomputed independently.
        by_type = {}
        for t in reader.tensors:
            e = by_type.setdefault(t.tensor_type.name, [0, 0, 0])
            e[0] += 1
            e[1] += int(t.n_elements)
            e[2] += int(t.n_bytes)
        self.assertEqual({k: [v["tensors"], v["elements"], v["bytes"]]
                          for k, v in ours["types"].items()}, by_type)
        total_bytes = sum(int(t.n_bytes) for t in reader.tensors)
        total_elems = sum(int(t.n_elements) for t in reader.tensors)
        self.assertEqual(ours["total"]["bytes"], total_bytes)
        if total_elems:
            self.assertAlmostEqual(ours["bits_per_weight"], 8 * total_bytes / total_elems,
                                   places=12)
        mats = [t for t in reader.tensors if len(t.shape) == 2]
        if mats:
            self.assertAlmostEqual(
                ours["matrix_bits_per_weight"],
                8 * sum(int(t.n_bytes) for t in mats) / sum(int(t.n_elements) for t in mats),
                places=12)
        return reader

    def write_synthetic(self, name, alignment=None, arch="synthetic"):
        path = os.path.join(self.tmp.name, name)
        w = gguf.GGUFWriter(path, arch)
        if alignment is not None:
            w.add_custom_alignment(alignment)
        w.add_uint8("t.u8", 255)
        w.add_int8("t.i8", -128)
        w.add_uint16("t.u16", 65535)
        w.add_int16("t.i16", -32768)
        w.add_uint32("t.u32", 4294967295)
        w.add_int32("t.i32", -2147483648)
        w.add_uint64("t.u64", 2**64 - 1)
        w.add_int64("t.i64", -2**63)
        w.add_float32("t.f32", 0.1)
        w.add_float32("t.f32_inf", float("inf"))
        w.add_float32("t.f32_denorm", 1e-40)
        w.add_float64("t.f64", 2.0 / 3.0)
        w.add_bool("t.true", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "h\u00e9llo \u4e16\u754c \U0001F600 \"quoted\" \\ \n\t\x01")
        w.add_string("t.empty", "")
        w.add_array("t.a_int", [1, -2, 3])
        w.add_array("t.a_float", [0.5, -1.25, 3e38])
        w.add_array("t.a_bool", [True, False, True])
        w.add_array("t.a_str", ["a", "", "\u00fc\u00f1\u00ee"])
        w.add_key_value("t.a_u64", [0, 2**64 - 1], V.ARRAY, V.UINT64)
        w.add_key_value("t.a_i8", [-1, 127], V.ARRAY, V.INT8)
        w.add_key_value("t.a_f64", [1e-300, -2.5], V.ARRAY, V.FLOAT64)
        w.add_array("t.a_nested", [[1, 2], [3, 4, 5]])
        w.add_array("t.a_nested_str", [["x", "yy"], ["zzz"]])
        rng = np.random.default_rng(7)
        w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
        w.add_tensor("f16", rng.standard_normal((2, 4, 6)).astype(np.float16))
        w.add_tensor("f32_4d", rng.standard_normal((2, 1, 3, 2)).astype(np.float32))
        w.add_tensor("q8_0", gguf.quants.quantize(
            rng.standard_normal((4, 64)).astype(np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
        w.add_tensor("q4_0", gguf.quants.quantize(
            rng.standard_normal((3, 96)).astype(np.float32), Q.Q4_0), raw_dtype=Q.Q4_0)
        w.add_tensor("q4_1", gguf.quants.quantize(
            rng.standard_normal((2, 32)).astype(np.float32), Q.Q4_1), raw_dtype=Q.Q4_1)
        # k-quants: raw block bytes (the reader does not interpret them).
        w.add_tensor("q4_k", rng.integers(0, 256, (2, 2 * 144), dtype=np.uint8), raw_dtype=Q.Q4_K)
        w.add_tensor("q6_k", rng.integers(0, 256, (3, 210), dtype=np.uint8), raw_dtype=Q.Q6_K)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    def test_synthetic_every_type(self):
        path = self.write_synthetic("every.gguf")
        ours = inspect_json(self, path)
        self.compare_with_reader(path, ours)
        # Spot checks of the JSON itself against the values written above.
        md = ours["metadata"]
        self.assertEqual(md["t.u64"]["value"], 2**64 - 1)
        self.assertEqual(md["t.i64"]["value"], -2**63)
        self.assertEqual(md["t.f32_inf"]["value"], "inf")
        self.assertEqual(md["t.a_nested"]["value"], [[1, 2], [3, 4, 5]])
        self.assertEqual(md["t.a_nested_str"]["value"], [["x", "yy"], ["zzz"]])
        self.assertEqual(md["t.str"]["value"],
                         "h\u00e9llo \u4e16\u754c \U0001F600 \"quoted\" \\ \n\t\x01")
        self.assertEqual(ours["architecture"], "synthetic")
        self.assertIsNone(ours["config"])

    def test_custom_alignment(self):
        for alignment in (1, 64, 256):
            path = self.write_synthetic(f"align{alignment}.gguf", alignment=alignment)
            ours = inspect_json(self, path)
            self.assertEqual(ours["alignment"], alignment)
            self.compare_with_reader(path, ours)
            for t in ours["tensors"]:
                self.assertEqual(t["offset"] % alignment, 0)

    def test_other_architecture_is_described(self):
        path = self.write_synthetic("gpt2.gguf", arch="gpt2")
        proc = inspect(path, "--json")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        ours = json.loads(proc.stdout)
        self.assertEqual(ours["architecture"], "gpt2")
        self.assertIsNone(ours["config"])
        self.assertIn("architecture 'gpt2' is not supported", ours["config_error"])
        text = inspect(path)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("architecture:  gpt2", text.stdout)

    def test_llama_without_its_keys_is_an_error(self):
        path = self.write_synthetic("llama.gguf", arch="llama")
        proc = inspect(path, "--json")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("'llama.embedding_length' is missing", proc.stderr)
        self.assertIn("'llama.embedding_length' is missing", json.loads(proc.stdout)["config_error"])

    def test_hostile_files_fail_with_a_message(self):
        path = self.write_synthetic("ok.gguf")
        with open(path, "rb") as f:
            data = f.read()
        cases = {
            # The writer pads after the last tensor, so cut well into its bytes.
            "truncated.gguf": (data[:-100], "past the end of the file"),
            "header.gguf": (data[:10], "truncated"),
            "magic.gguf": (b"GGML" + data[4:], "not a GGUF file"),
            "v1.gguf": (data[:4] + (1).to_bytes(4, "little") + data[8:], "version 1"),
            "kvcount.gguf": (data[:16] + (2**63).to_bytes(8, "little") + data[24:],
                             "kv_count 9223372036854775808"),
        }
        for name, (content, expect) in cases.items():
            p = os.path.join(self.tmp.name, name)
            with open(p, "wb") as f:
                f.write(content)
            proc = inspect(p, "--json")
            self.assertEqual(proc.returncode, 1, name)
            self.assertEqual(proc.stdout, "", name)
            self.assertIn(p, proc.stderr, name)
            self.assertIn(expect, proc.stderr, name)
        missing = inspect(os.path.join(self.tmp.name, "nope.gguf"))
        self.assertEqual(missing.returncode, 1)
        self.assertIn("nope.gguf", missing.stderr)

    def test_real_model(self):
        path = os.environ.get("TESSERA_TEST_MODEL", "")
        if not os.path.exists(path):
            self.skipTest("real model not found (set TESSERA_TEST_MODEL; scripts/fetch-model "
                          "fetches SmolLM2-135M-Instruct.Q4_1.gguf)")
        ours = inspect_json(self, path)
        reader = self.compare_with_reader(path, ours)
        self.assertEqual(len(ours["tensors"]), 272)
        c = ours["config"]
        self.assertIsNotNone(c, ours.get("config_error"))

        def field(key):
            return reader.fields[key].contents()

        self.assertEqual(c["n_embd"], field("llama.embedding_length"))
        self.assertEqual(c["n_layers"], field("llama.block_count"))
        self.assertEqual(c["n_heads"], field("llama.attention.head_count"))
        self.assertEqual(c["n_kv_heads"], field("llama.attention.head_count_kv"))
        self.assertEqual(c["head_dim"], field("llama.embedding_length")
                         // field("llama.attention.head_count"))
        self.assertEqual(c["n_rot"], field("llama.rope.dimension_count"))
        self.assertEqual(c["n_ff"], field("llama.feed_forward_length"))
        self.assertEqual(c["n_vocab"], len(field("tokenizer.ggml.tokens")))
        self.assertEqual(c["n_ctx"], field("llama.context_length"))
        self.assertTrue(same_scalar(c["rope_freq_base"], field("llama.rope.freq_base"), "FLOAT32"))
        self.assertTrue(same_scalar(c["rms_norm_eps"],
                                    field("llama.attention.layer_norm_rms_epsilon"), "FLOAT32"))
        self.assertEqual(c["tied_output"], "output.weight" not in [t.name for t in reader.tensors])
        text = inspect(path, "--tensors")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("blk.29.ffn_down.weight", text.stdout)


if __name__ == "__main__":
    unittest.main()
