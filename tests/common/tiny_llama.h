// A tiny llama shape shared by the engine and cluster tests: small enough to run in
// milliseconds, with grouped-query attention (4 query heads over 2 KV heads) and an FFN width
// that splits on Q8_0/Q4_0 block boundaries for tensor-parallel shards.
#ifndef TESSERA_TESTS_COMMON_TINY_LLAMA_H_
#define TESSERA_TESTS_COMMON_TINY_LLAMA_H_

#include "model/config.h"

namespace tessera::testing_util {

inline ModelConfig TinyLlamaConfig() {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "tiny";
  c.n_embd = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.n_rot = 16;
  c.n_ff = 128;
  c.n_vocab = 96;
  c.n_ctx = 64;
  c.rope_freq_base = 10000.0f;
  c.rms_norm_eps = 1e-5f;
  return c;
}

}  // namespace tessera::testing_util

#endif  // TESSERA_TESTS_COMMON_TINY_LLAMA_H_
