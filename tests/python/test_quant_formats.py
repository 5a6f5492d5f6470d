"""Tessera's reference quant formats against the PyPI `gguf` package (gguf.quants).

Drives $TESSERA_BIN_DIR/tests/quant_tool (the C++ reference code of kernels/quant/) on random
and edge-case data and compares with gguf.quants, an implementation written independently in
numpy.

Tolerances, and why:
  * Dequantization, all 13 formats: exact, 0 ulp (bit patterns equal, so -0.0 != +0.0). The
    formats are defined by float32 arithmetic (fp16 scale -> float32, then d * q, or
    (d * sc) * q - (dmin * m) for the k-quants) and both sides perform the same operations in
    the same order, so any difference is a layout or arithmetic bug. NaN results (only from
    inf/NaN inputs or scales) are compared NaN-aware: both must be NaN, payloads may differ
    (numpy keeps a signalling NaN's bits where Tessera's fp16 conversion makes it quiet).
  * Quantization where gguf implements it (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): exact,
    byte-identical blocks (NaN-aware for the float formats, as above).
  * Q2_K..Q6_K (gguf has no quantizer): Tessera's own quantizer is checked through gguf's
    dequantizer (must equal ours bit-exactly) and by the relative RMS round-trip error
    ||dequant(quant(x)) - x|| / ||x|| on Gaussian data, below the per-format bound in
    KQUANT_RMS_BOUND (measured values are ~4 % lower; the data are seeded, so the figures are
    deterministic and the bounds catch even a disabled scale search in most formats, and a
    mis-packed scale, which gives errors several times larger).
"""

import os
import subprocess
import tempfile
import unittest

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants

ALL_FORMATS = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
               "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# Formats whose quantizer gguf implements: ours must be byte-identical.
GGUF_QUANTIZERS = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]

# Byte offsets of the fp16 scale fields (d, and m / dmin) inside each block (ggml layouts).
FP16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}

# Upper bounds of the relative RMS round-trip error of Tessera's k-quant quantizers on N(0, 1)
# data (the same figures are documented in kernels/quant/q<N>_k.cc).
# Measured: 0.269, 0.143, 0.0715, 0.0362, 0.0169. Without the scale search of kquant_fit.cc the
# errors grow by 1.5-6 %, so the bounds sit about 4 % above the measured values.
KQUANT_RMS_BOUND = {"Q2_K": 0.28, "Q3_K": 0.15, "Q4_K": 0.075, "Q5_K": 0.038, "Q6_K": 0.0177}


def qtype(name):
    return GGMLQuantizationType[name]


def sizes(name):
    return GGML_QUANT_SIZES[qtype(name)]  # (elements per block, bytes per block)


def tool_path():
    bin_dir = os.environ.get("TESSERA_BIN_DIR")
    if not bin_dir:
        raise unittest.SkipTest("TESSERA_BIN_DIR is not set (point it at a Tessera build dir)")
    path = os.path.join(bin_dir, "tests", "quant_tool")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} not found: build the quant_tool target")
    return path


class QuantToolTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tool = tool_path()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_tool(self, mode, fmt, data):
        src = os.path.join(self.tmp.name, "in.bin")
        dst = os.path.join(self.tmp.name, "out.bin")
        with open(src, "wb") as f:
            f.write(np.ascontiguousarray(data).tobytes())
        res = subprocess.run([self.tool, mode, fmt, src, dst], capture_output=True, text=True)
        self.assertEqual(res.returncode, 0, f"quant_tool {mode} {fmt} failed: {res.stderr}")
        with open(dst, "rb") as f:
            out = f.read()
        return np.frombuffer(out, dtype=np.float32 if mode == "dequantize" else np.uint8)

    def ours_dequantize(self, fmt, blocks):
        return self.run_tool("dequantize", fmt, blocks.view(np.uint8))

    def ours_quantize(self, fmt, values):
        return self.run_tool("quantize", fmt, values.astype(np.float32))

    @staticmethod
    def gguf_dequantize(fmt, blocks):
        with np.errstate(all="ignore"):  # inf/NaN scales are tested on purpose
            out = quants.dequantize(blocks.view(np.uint8).reshape(-1), qtype(fmt))
        return np.asarray(out, dtype=np.float32).reshape(-1)

    @staticmethod
    def gguf_quantize(fmt, values):
        block_elems, _ = sizes(fmt)
        rows = values.astype(np.float32).reshape(-1, block_elems)
        with np.errstate(all="ignore"):  # fp16 overflow of huge scales is tested on purpose
            out = quants.quantize(rows, qtype(fmt))
        return np.ascontiguousarray(out).view(np.uint8).reshape(-1)

    def assert_same_floats(self, ours, theirs, what):
        """Bit-exact float32 equality; NaN matches any NaN."""
        self.assertEqual(ours.shape, theirs.shape, what)
        nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
        bad = (ours.view(np.uint32) != theirs.view(np.uint32)) & ~(nan_ours & nan_theirs)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.fail(f"{what}: {int(bad.sum())} of {ours.size} values differ; first at {i}: "
                      f"ours {ours[i]!r} (0x{int(ours.view(np.uint32)[i]):08x}), gguf "
                      f"{theirs[i]!r} (0x{int(theirs.view(np.uint32)[i]):08x})")

    def assert_same_blocks(self, fmt, ours, theirs, what):
        """Byte-identical blocks; for F16/BF16 a NaN matches a NaN of the same sign."""
        self.assertEqual(ours.shape, theirs.shape, what)
        if fmt in ("F16", "BF16"):
            a, b = ours.view(np.uint16), theirs.view(np.uint16)
            exp_mask, man_mask = (0x7C00, 0x03FF) if fmt == "F16" else (0x7F80, 0x007F)
            isnan = lambda h: ((h & exp_mask) == exp_mask) & ((h & man_mask) != 0)
            bad = (a != b) & ~(isnan(a) & isnan(b) & ((a & 0x8000) == (b & 0x8000)))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                self.fail(f"{what}: {int(bad.sum())} values differ; first at {i}: ours "
                          f"0x{int(a[i]):04x}, gguf 0x{int(b[i]):04x}")
            return
        _, block_bytes = sizes(fmt)
        bad_blocks = np.flatnonzero((ours != theirs).reshape(-1, block_bytes).any(axis=1))
        if bad_blocks.size:
            i = int(bad_blocks[0])
            self.fail(f"{what}: {bad_blocks.size} blocks differ; first is block {i}:\n"
                      f" ours {ours.reshape(-1, block_bytes)[i].tobytes().hex()}\n"
                      f" gguf {theirs.reshape(-1, block_bytes)[i].tobytes().hex()}")


def random_fp16_scales(rng, n):
    """Finite fp16 scales of sensible magnitude (1e-3 .. 10), both signs."""
    mag = 10.0 ** rng.uniform(-3, 1, n)
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def random_blocks(rng, fmt, n_blocks, scales):
    """Random block bytes whose fp16 scale fields hold `scales(n)` values."""
    _, block_bytes = sizes(fmt)
    blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for off in FP16_FIELDS[fmt]:
        field = np.asarray(scales(n_blocks), np.float16).view(np.uint8).reshape(-1, 2)
        blocks[:, off:off + 2] = field
    return blocks.reshape(-1)


class DequantizeMatchesGguf(QuantToolTestCase):
    """Our dequantization equals gguf.quants.dequantize bit for bit."""

    def check(self, fmt, blocks, what):
        self.assert_same_floats(self.ours_dequantize(fmt, blocks),
                                self.gguf_dequantize(fmt, blocks), f"{fmt} {what}")

    def test_float_formats_every_16_bit_pattern(self):
        patterns = np.arange(1 << 16, dtype=np.uint16)  # includes subnormals, +-0, inf, NaN
        for fmt in ("F16", "BF16"):
            with self.subTest(fmt=fmt):
                self.check(fmt, patterns.view(np.uint8), "all 65536 bit patterns")

    def test_f32_random_bits(self):
        rng = np.random.default_rng(1)
        bits = rng.integers(0, 1 << 32, 4096, dtype=np.uint64).astype(np.uint32)
        bits[:6] = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x00000001]
        self.check("F32", bits.view(np.uint8), "random bits")

    def test_block_formats_random_codes(self):
        rng = np.random.default_rng(2)
        for fmt in ALL_FORMATS[3:]:
            block_elems, _ = sizes(fmt)
            n_blocks = 4096 // block_elems * 4
            with self.subTest(fmt=fmt):
                self.check(fmt, random_blocks(rng, fmt, n_blocks,
                                              lambda n: random_fp16_scales(rng, n)),
                           "random codes, sensible scales")

    def test_block_formats_edge_scales(self):
        rng = np.random.default_rng(3)
        edge = {
            "zero": lambda n: np.zeros(n, np.float16),
            "negative zero": lambda n: np.full(n, -0.0, np.float16),
            "subnormal": lambda n: rng.integers(1, 0x400, n, dtype=np.uint16).view(np.float16),
            "negative subnormal":
                lambda n: (rng.integers(1, 0x400, n, dtype=np.uint16) | 0x8000).view(np.float16),
            "largest finite": lambda n: np.full(n, -65504.0, np.float16),
            # Any 16 bits, inf and NaN included: results compared NaN-aware.
            "any bits": lambda n: rng.integers(0, 1 << 16, n, dtype=np.uint16).view(np.float16),
        }
        for fmt in ALL_FORMATS[3:]:
            for name, scales in edge.items():
                with self.subTest(fmt=fmt, scales=name):
                    self.check(fmt, random_blocks(rng, fmt, 16, scales), f"{name} scales")

    def test_all_zero_bytes(self):
        for fmt in ALL_FORMATS:
            block_elems, block_bytes = sizes(fmt)
            with self.subTest(fmt=fmt):
                blocks = np.zeros(block_bytes * 3, np.uint8)
                ours = self.ours_dequantize(fmt, blocks)
                self.check(fmt, blocks, "all-zero bytes")
                self.assertEqual(ours.size, 3 * block_elems)


def tie_blocks(fmt):
    """Blocks whose scaled values land exactly on rounding boundaries (d comes out exactly 1)."""
    if fmt == "Q8_0":  # max |x| = 127 -> d = 1: x.5 values tie in np_roundf (half away from 0)
        b = np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0)])
    elif fmt == "Q4_0":  # signed max -8 -> d = 1: x + 8.5 hits integers (trunc boundaries)
        b = np.concatenate([[-8.0], np.arange(-7.5, 8.0, 0.5)])
    elif fmt == "Q5_0":  # signed max -16 -> d = 1
        b = np.concatenate([[-16.0], np.arange(-15.5, 16.0, 1.0)])
    elif fmt == "Q4_1":  # min 0, max 15 -> d = 1: x + 0.5 hits integers
        b = np.concatenate([[0.0, 15.0], np.arange(0.5, 15.5, 0.5)])
    elif fmt == "Q5_1":  # min 0, max 31 -> d = 1
        b = np.concatenate([[0.0, 31.0], np.arange(0.5, 15.5, 0.5)])
    else:
        return None
    b = b[:32]
    return np.stack([b, -b, b * 0.25, b[::-1]]).astype(np.float32).reshape(-1)


class QuantizeMatchesGguf(QuantToolTestCase):
    """Where gguf has a quantizer, ours produces byte-identical blocks."""

    def check(self, fmt, values, what):
        values = np.asarray(values, np.float32).reshape(-1)
        self.assert_same_blocks(fmt, self.ours_quantize(fmt, values),
                                self.gguf_quantize(fmt, values), f"{fmt} {what}")

    def test_gaussian_blocks_of_varied_magnitude(self):
        rng = np.random.default_rng(10)
        for fmt in GGUF_QUANTIZERS:
            with self.subTest(fmt=fmt):
                x = rng.standard_normal((256, 32)) * 10.0 ** rng.uniform(-4, 3, (256, 1))
                x[::7] += rng.uniform(-5, 5, (x[::7].shape[0], 1))  # blocks with an offset
                self.check(fmt, x, "Gaussian")

    def test_zero_tiny_and_huge_blocks(self):
        rng = np.random.default_rng(11)
        cases = {
            "all zero": np.zeros((4, 32)),
            "one nonzero": np.eye(32)[:4] * np.array([[3.0], [-3.0], [1e-3], [-7e4]]),
            "all equal": np.full((4, 32), 1.25) * np.array([[1], [-1], [100], [-1e-5]]),
            # d underflows to fp16 subnormal / zero.
            "tiny": rng.standard_normal((8, 32)) * 10.0 ** rng.uniform(-20, -5, (8, 1)),
            # d overflows fp16 (stored as inf) for the largest.
            "huge": rng.standard_normal((8, 32)) * 10.0 ** rng.uniform(3, 30, (8, 1)),
            # Largest magnitude appears twice with opposite signs: the first one wins.
            "max magnitude tie": np.stack([np.r_[3.0, -3.0, np.linspace(-2, 2, 30)],
                                           np.r_[-3.0, 3.0, np.linspace(-2, 2, 30)]]),
        }
        for fmt in GGUF_QUANTIZERS:
            for name, x in cases.items():
                with self.subTest(fmt=fmt, case=name):
                    self.check(fmt, x, name)

    def test_rounding_ties(self):
        for fmt in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
            with self.subTest(fmt=fmt):
                self.check(fmt, tie_blocks(fmt), "exact ties")

    def test_float_formats_special_values(self):
        rng = np.random.default_rng(12)
        bits = rng.integers(0, 1 << 32, 8192, dtype=np.uint64).astype(np.uint32)
        # Exact halfway cases for fp16 (13 dropped bits = 0x1000) and bf16 (16 bits = 0x8000),
        # in the normal and the fp16-subnormal range, and the overflow threshold 65520.
        halfway16 = (rng.integers(0x33000000, 0x47800000, 2048, dtype=np.uint64)
                     .astype(np.uint32) & ~np.uint32(0x1FFF)) | np.uint32(0x1000)
        halfway_bf = (bits[:2048] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99,
                             65520.0, 6e-8, 3e-8, 2.9e-8, 1e-45, 3.4e38], np.float32)
        specials = specials.view(np.uint32)
        for fmt in ("F16", "BF16", "F32"):
            with self.subTest(fmt=fmt):
                all_bits = np.concatenate([bits, halfway16, halfway_bf, specials])
                self.check(fmt, all_bits.view(np.float32), "special values and ties")


class KQuantRoundTrip(QuantToolTestCase):
    """Tessera's own k-quant quantizer: decodable by gguf, and accurate."""

    def test_gguf_decodes_our_blocks_and_error_is_bounded(self):
        rng = np.random.default_rng(20)
        x = rng.standard_normal(64 * 256).astype(np.float32)
        for fmt in KQUANTS:
            with self.subTest(fmt=fmt):
                blocks = self.ours_quantize(fmt, x)
                ours = self.ours_dequantize(fmt, blocks)
                self.assert_same_floats(ours, self.gguf_dequantize(fmt, blocks),
                                        f"{fmt} dequantize of our quantized blocks")
                x64 = x.astype(np.float64)
                rel = np.sqrt(np.sum((ours - x64) ** 2) / np.sum(x64 ** 2))
                self.assertLess(rel, KQUANT_RMS_BOUND[fmt], f"{fmt} relative RMS error")

    def test_offset_and_varied_scale_data(self):
        # Super-blocks with a mean offset and magnitudes from 1e-3 to 1e2: the sub-block mins
        # (Q2_K, Q4_K, Q5_K) and the fp16 super-scales are exercised; error relative to the RMS
        # of each super-block.
        rng = np.random.default_rng(21)
        sb = rng.standard_normal((32, 256)) * 10.0 ** rng.uniform(-3, 2, (32, 1))
        sb += rng.uniform(-1, 1, (32, 1)) * np.abs(sb).max(axis=1, keepdims=True)
        x = sb.astype(np.float32).reshape(-1)
        for fmt in KQUANTS:
            with self.subTest(fmt=fmt):
                blocks = self.ours_quantize(fmt, x)
                ours = self.ours_dequantize(fmt, blocks)
                self.assert_same_floats(ours, self.gguf_dequantize(fmt, blocks), fmt)
                err = (ours.astype(np.float64) - x).reshape(32, 256)
                dev = x.astype(np.float64).reshape(32, 256)
                rel = np.sqrt((err ** 2).sum(axis=1) / (dev ** 2).sum(axis=1))
                # Worst of 32 super-blocks (measured 1.0-1.1x the Gaussian figure): 1.15x bound.
                self.assertLess(rel.max(), 1.15 * KQUANT_RMS_BOUND[fmt], f"{fmt} worst super-block")

    def test_zero_and_constant_super_blocks(self):
        x = np.concatenate([np.zeros(256), np.full(256, 0.75), np.full(256, -2.0)])
        x = x.astype(np.float32)
        for fmt in KQUANTS:
            with self.subTest(fmt=fmt):
                blocks = self.ours_quantize(fmt, x)
                ours = self.ours_dequantize(fmt, blocks)
                self.assert_same_floats(ours, self.gguf_dequantize(fmt, blocks), fmt)
                self.assertTrue(np.all(ours[:256] == 0.0), f"{fmt}: zeros must stay exactly 0")
                # fp16 super-scale times a 4..8-bit sub-scale code: a few 1e-4 relative.
                np.testing.assert_allclose(ours[256:], x[256:], rtol=2e-3,
                                           err_msg=f"{fmt}: constant blocks")


class ToolRejectsBadInput(QuantToolTestCase):
    def run_raw(self, *args):
        return subprocess.run([self.tool, *args], capture_output=True, text=True)

    def test_errors_exit_nonzero_with_a_message(self):
        src = os.path.join(self.tmp.name, "bad.bin")
        with open(src, "wb") as f:
            f.write(b"\0" * 20)  # 20 bytes: 5 floats, not a whole Q4_0 block either way
        dst = os.path.join(self.tmp.name, "bad.out")
        cases = [
            (["quantize", "Q4_0", src, dst], "32-element blocks"),
            (["dequantize", "Q4_0", src, dst], "18 bytes"),
            (["dequantize", "Q9_9", src, dst], "unknown quantization type 'Q9_9'"),
            (["frobnicate", "Q4_0", src, dst], "unknown mode 'frobnicate'"),
            (["dequantize", "Q4_0", src + ".missing", dst], "cannot open"),
            (["dequantize", "Q4_0"], "usage"),
        ]
        for args, message in cases:
            with self.subTest(args=args[:2]):
                res = self.run_raw(*args)
                self.assertNotEqual(res.returncode, 0)
                self.assertIn(message, res.stderr)


if __name__ == "__main__":
    unittest.main()
