// The tiny llama of tests/common/tiny_llama.h with synthetic Q8_0 weights, as
// the worker tests need it: the weights in memory, the same weights written to
// a GGUF file (what a Worker opens from an Assignment), and a byte-level
// tokenizer of its 96 tokens for model/generate.h.
#ifndef TESSERA_TESTS_WORKER_TINY_MODEL_TESTUTIL_H_
#define TESSERA_TESTS_WORKER_TINY_MODEL_TESTUTIL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "model/tokenizer.h"
#include "model/weights.h"

namespace tessera::testing_util {

// SyntheticWeights of TinyLlamaConfig() in Q8_0 (seeded; built once per seed
// and process).
const SyntheticWeights &TinyWeights(uint64_t seed = 7);

// A GGUF file holding exactly TinyWeights(seed)'s tensors and the config's
// metadata; written once per seed and process into the temporary directory.
// Returns its path.
const std::string &TinyGgufPath(uint64_t seed = 7);

// A gpt2-style tokenizer with tokens "t0".."t95" and no merges or
// end-of-generation token, so Generate() stops only at max_tokens.
std::unique_ptr<Tokenizer> TinyTokenizer();

}  // namespace tessera::testing_util

#endif  // TESSERA_TESTS_WORKER_TINY_MODEL_TESTUTIL_H_
