"""An independent float64 reference of the llama forward pass, in numpy.

Written from the architecture's definition (Touvron et al. 2023; Llama 3 RoPE scaling from
Meta's reference code's published formula), over weights dequantized by the PyPI `gguf`
package, so it shares no code with Tessera's C++ engine. Used by tests to check the engine's
logits; slow but exact enough (float64 everywhere).

GGUF facts relied on:
- llama.cpp's converter permutes attn_q / attn_k rows so that RoPE rotates *adjacent* pairs
  (x[2i], x[2i+1]) of each head ("normal" rope mode), with theta_i = base^(-2i/head_dim).
- tensor ne = (cols, rows): gguf's reader gives numpy arrays of shape (rows, cols); y = W @ x.
- no output.weight tensor means the output projection is tied to token_embd.
"""
import math

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class LlamaReference:
    def __init__(self, path):
        self.reader = GGUFReader(path)
        f = self.reader.fields
        arch = bytes(f["general.architecture"].parts[-1]).decode()
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r} is not llama")

        def get(key, default=None):
            field = f.get(f"llama.{key}")
            return default if field is None else field.parts[-1][0].item()

        self.n_embd = get("embedding_length")
        self.n_layers = get("block_count")
        self.n_heads = get("attention.head_count")
        self.n_kv_heads = get("attention.head_count_kv", self.n_heads)
        self.head_dim = self.n_embd // self.n_heads
        self.eps = get("attention.layer_norm_rms_epsilon")
        self.rope_base = get("rope.freq_base", 10000.0)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache = {}

    def w(self, name):
        if name not in self._cache:
            t = self.tensors[name]
            a = dequantize(t.data, t.tensor_type).astype(np.float64)
            shape = tuple(int(d) for d in reversed(t.shape))
            self._cache[name] = a.reshape(shape)
        return self._cache[name]

    def rmsnorm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):
        # x: (T, H, D); rotate adjacent pairs.
        d = self.head_dim
        inv = self.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = positions[:, None].astype(np.float64) * inv[None, :]  # (T, D/2)
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, tokens):
        """Logits (T, vocab) for a whole prompt, causal attention, positions 0..T-1."""
        tokens = np.asarray(tokens)
        T = len(tokens)
        pos = np.arange(T)
        x = self.w("token_embd.weight")[tokens]  # (T, n_embd)
        group = self.n_heads // self.n_kv_heads
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.rmsnorm(x, self.w(p + "attn_norm.weight"))
            q = (h @ self.w(p + "attn_q.weight").T).reshape(T, self.n_heads, self.head_dim)
            k = (h @ self.w(p + "attn_k.weight").T).reshape(T, self.n_kv_heads, self.head_dim)
            v = (h @ self.w(p + "attn_v.weight").T).reshape(T, self.n_kv_heads, self.head_dim)
            q, k = self.rope(q, pos), self.rope(k, pos)
            att = np.empty((T, self.n_heads, self.head_dim))
            for hd in range(self.n_heads):
                kv = hd // group
                s = q[:, hd, :] @ k[:, kv, :].T / math.sqrt(self.head_dim) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                att[:, hd, :] = s @ v[:, kv, :]
            x = x + att.reshape(T, -1) @ self.w(p + "attn_output.weight").T
            h = self.rmsnorm(x, self.w(p + "ffn_norm.weight"))
            g = h @ self.w(p + "ffn_gate.weight").T
            u = h @ self.w(p + "ffn_up.weight").T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ self.w(p + "ffn_down.weight").T
        x = self.rmsnorm(x, self.w("output_norm.weight"))
        out = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        return x @ self.w(out).T
