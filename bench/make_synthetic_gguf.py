#!/usr/bin/env python3
"""Writes a synthetic GGUF of the Llama 3.2 1B shape with random Q4_0 (Q4_K_M, Q5_K_M) weights.

Used by bench/peer so that Tessera and llama.cpp can be timed on the same file of a
llama3-1B shape without downloading one: n_embd 2048, 16 layers, 32 heads, 8 KV heads,
n_ff 8192, vocab 128256, rope base 500000 with llama3 rope scaling (rope_freqs tensor),
tied embeddings. The tokenizer section is a minimal byte-level BPE ("gpt2", llama-bpe
pre-tokenizer) with 128256 tokens: 256 byte tokens, a few merges, filler tokens and the
Llama 3 special tokens, enough for llama.cpp and Tessera to load it. The weights are random
valid Q4_0 blocks (random nibbles, fp16 scales of a real model's order of magnitude), so
the output is nonsense but every byte is read exactly as with a real file.

--quant Q4_K_M writes the tensor types llama.cpp's Q4_K_M recipe gives this shape (the rules
restated in sharding/recipes.cc): Q4_K throughout, Q6_K for the tied token embedding (it is
also the output) and for attn_v and ffn_down in the layers where use_more_bits(i, n) = i < n/8
|| i >= 7n/8 || (i - n/8) % 3 == 2; the k-quant blocks are random bytes with fp16 scales set
to a real model's order of magnitude. --quant Q5_K_M: the same with Q5_K in place of Q4_K
(llama.cpp's Q5_K_M recipe).

The file is cached: it is rewritten only when missing or written by another generator
version. Prints the file's path as the last line.
    bench/make_synthetic_gguf.py [--out PATH] [--layers N] [--quant Q4_0|Q4_K_M|Q5_K_M]
"""
import argparse
import math
import os
import pathlib
import sys

import numpy as np
import gguf

GENERATOR_VERSION = 1
VERSION_KEY = "tessera.synthetic.generator_version"

N_EMBD, N_LAYERS, N_HEAD, N_HEAD_KV, N_FF, N_VOCAB = 2048, 16, 32, 8, 8192, 128256
HEAD_DIM = N_EMBD // N_HEAD
ROPE_BASE = 500000.0
# Llama 3.2's rope scaling (factor, low/high frequency factors, original context).
ROPE_FACTOR, ROPE_LOW, ROPE_HIGH, ROPE_ORIG_CTX = 32.0, 1.0, 4.0, 8192
N_CTX = 131072
Q4_0_BLOCK, Q4_0_BYTES = 32, 18  # elements and bytes per block: fp16 scale + 16 nibble bytes
QK_K = 256  # elements per k-quant super-block
Q4_K_BYTES = 144  # d, dmin (fp16), scales[12], qs[128]
Q5_K_BYTES = 176  # d, dmin (fp16), scales[12], qh[32], qs[128]
Q6_K_BYTES = 210  # ql[128], qh[64], scales[16] (int8), d (fp16)


def default_path(layers: int, quant: str) -> pathlib.Path:
    base = pathlib.Path(os.environ.get("TESSERA_MODEL_DIR",
                                       pathlib.Path.home() / ".cache/tessera/models"))
    suffix = "" if layers == N_LAYERS else f"-{layers}layers"
    return base / f"synthetic-llama3.2-1b{suffix}.{quant}.gguf"


def byte_chars() -> list:
    """The byte-level BPE alphabet: byte b -> the printable character that stands for it."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary():
    """(tokens, token types, merges, bos id, eos id) of a 128256-token byte-level BPE vocab."""
    alphabet = byte_chars()
    tokens = list(alphabet)
    merges = []
    # Merges of a space marker or a letter with a lowercase letter: "Ġa", "th", ...
    letters = [alphabet[b] for b in range(ord("a"), ord("z") + 1)]
    firsts = [alphabet[ord(" ")]] + letters
    for a in firsts:
        for b in letters:
            merges.append(f"{a} {b}")
            tokens.append(a + b)
    n_special = 256
    n_normal = N_VOCAB - n_special
    # Filler: distinct 3-character strings of byte characters (never produced by the merges,
    # but valid pieces that decode to bytes).
    i = 0
    while len(tokens) < n_normal:
        tokens.append(alphabet[i % 256] + alphabet[(i // 256) % 256] + alphabet[i // 65536])
        i += 1
    types = [gguf.TokenType.NORMAL] * n_normal
    special = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>",
               7: "<|end_header_id|>", 9: "<|eot_id|>"}
    reserved = 0
    for k in range(n_special):
        if k in special:
            tokens.append(special[k])
        else:
            tokens.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
        types.append(gguf.TokenType.CONTROL)
    assert len(tokens) == N_VOCAB and len(set(tokens)) == N_VOCAB
    return tokens, types, merges, n_normal, n_normal + 9  # <|begin_of_text|>, <|eot_id|>


def rope_freq_factors() -> np.ndarray:
    """Llama 3 rope scaling as per-dimension divisors of the rotation frequency."""
    factors = []
    low_wavelen = ROPE_ORIG_CTX / ROPE_LOW
    high_wavelen = ROPE_ORIG_CTX / ROPE_HIGH
    for i in range(0, HEAD_DIM, 2):
        freq = 1.0 / (ROPE_BASE ** (i / HEAD_DIM))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(ROPE_FACTOR)
        else:
            smooth = (ROPE_ORIG_CTX / wavelen - ROPE_LOW) / (ROPE_HIGH - ROPE_LOW)
            factors.append(1.0 / ((1 - smooth) / ROPE_FACTOR + smooth))
    return np.array(factors, dtype=np.float32)


def random_q4_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random valid Q4_0 rows as bytes, shape (rows, cols / 32 * 18)."""
    blocks = cols // Q4_0_BLOCK
    data = np.frombuffer(rng.bytes(rows * blocks * Q4_0_BYTES), dtype=np.uint8).copy()
    data = data.reshape(rows, blocks, Q4_0_BYTES)
    # Scales: weight = d * (q - 8), so d ~ 0.004 gives a weight std ~ 0.02 as in real models.
    d = rng.uniform(0.002, 0.006, size=(rows, blocks)).astype(np.float16)
    data[:, :, 0:2] = d.view(np.uint8).reshape(rows, blocks, 2)
    return data.reshape(rows, blocks * Q4_0_BYTES)


def random_k(rng: np.random.Generator, rows: int, cols: int, block_bytes: int,
             scale_offsets) -> np.ndarray:
    """Random k-quant rows as bytes, shape (rows, cols / 256 * block_bytes): random codes and
    sub-block scales, the fp16 super-block scales at scale_offsets set so that weights have a
    real model's magnitude (std ~ 0.02)."""
    blocks = cols // QK_K
    data = np.frombuffer(rng.bytes(rows * blocks * block_bytes), dtype=np.uint8).copy()
    data = data.reshape(rows, blocks, block_bytes)
    for off, lo, hi in scale_offsets:
        d = rng.uniform(lo, hi, size=(rows, blocks)).astype(np.float16)
        data[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, blocks, 2)
    return data.reshape(rows, blocks * block_bytes)


def random_q4_k(rng, rows, cols):
    # w = d * sc * q - dmin * m with sc, m < 64 and q < 16.
    return random_k(rng, rows, cols, Q4_K_BYTES, [(0, 5e-5, 1.5e-4), (2, 5e-5, 1.5e-4)])


def random_q5_k(rng, rows, cols):
    # w = d * sc * q - dmin * m with sc, m < 64 and q < 32.
    return random_k(rng, rows, cols, Q5_K_BYTES, [(0, 2.5e-5, 7.5e-5), (2, 2.5e-5, 7.5e-5)])


def random_q6_k(rng, rows, cols):
    # w = d * sc * (q - 32) with sc an int8 and q < 64.
    return random_k(rng, rows, cols, Q6_K_BYTES, [(208, 5e-6, 1.5e-5)])


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def is_current(path: pathlib.Path) -> bool:
    try:
        field = gguf.GGUFReader(path).get_field(VERSION_KEY)
        return field is not None and int(field.parts[field.data[0]][0]) == GENERATOR_VERSION
    except Exception:  # A missing, truncated or foreign file is rewritten.
        return False


def write(path: pathlib.Path, layers: int, seed: int, quant: str) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(f"synthetic llama3.2-1b shape (random {quant} weights)")
    w.add_uint32(VERSION_KEY, GENERATOR_VERSION)
    w.add_block_count(layers)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type({"Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                     "Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M,
                     "Q5_K_M": gguf.LlamaFileType.MOSTLY_Q5_K_M}[quant])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types, merges, bos, eos = vocabulary()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)

    Q = gguf.GGMLQuantizationType
    if quant == "Q4_0":
        def tensor(name, rows, cols, _more_bits=False):
            w.add_tensor(name, random_q4_0(rng, rows, cols), raw_dtype=Q.Q4_0)
    else:
        five = quant == "Q5_K_M"

        def tensor(name, rows, cols, more_bits=False):
            if more_bits:
                w.add_tensor(name, random_q6_k(rng, rows, cols), raw_dtype=Q.Q6_K)
            elif five:
                w.add_tensor(name, random_q5_k(rng, rows, cols), raw_dtype=Q.Q5_K)
            else:
                w.add_tensor(name, random_q4_k(rng, rows, cols), raw_dtype=Q.Q4_K)
    ones = np.ones(N_EMBD, dtype=np.float32)
    # Tied: the embedding is also the output, which the K_M recipes make Q6_K.
    tensor("token_embd.weight", N_VOCAB, N_EMBD, True)
    w.add_tensor("rope_freqs.weight", rope_freq_factors())
    for i in range(layers):
        p = f"blk.{i}."
        more = use_more_bits(i, layers)
        w.add_tensor(p + "attn_norm.weight", ones)
        tensor(p + "attn_q.weight", N_EMBD, N_EMBD)
        tensor(p + "attn_k.weight", N_HEAD_KV * HEAD_DIM, N_EMBD)
        tensor(p + "attn_v.weight", N_HEAD_KV * HEAD_DIM, N_EMBD, more)
        tensor(p + "attn_output.weight", N_EMBD, N_EMBD)
        w.add_tensor(p + "ffn_norm.weight", ones)
        tensor(p + "ffn_gate.weight", N_FF, N_EMBD)
        tensor(p + "ffn_up.weight", N_FF, N_EMBD)
        tensor(p + "ffn_down.weight", N_EMBD, N_FF, more)
    w.add_tensor("output_norm.weight", ones)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, help="output file (default: the model cache)")
    ap.add_argument("--layers", type=int, default=N_LAYERS, help="number of layers (default 16)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--force", action="store_true", help="rewrite even if a current file exists")
    ap.add_argument("--quant", choices=["Q4_0", "Q4_K_M", "Q5_K_M"], default="Q4_0",
                    help="weight types (default Q4_0)")
    args = ap.parse_args()
    if not 1 <= args.layers <= N_LAYERS:
        ap.error(f"--layers must be in 1..{N_LAYERS}, got {args.layers}")
    path = args.out or default_path(args.layers, args.quant)
    if args.force or not is_current(path):
        print(f"make_synthetic_gguf: writing {path} ...", file=sys.stderr)
        write(path, args.layers, args.seed, args.quant)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
