#include "tests/worker/tiny_model_testutil.h"

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kernels/quant/types.h"
#include "tests/common/tiny_llama.h"
#include "tests/model/gguf_writer_testutil.h"

namespace tessera::testing_util {
namespace {

absl::Mutex mu(absl::kConstInit);

// Tensor names in the order SyntheticWeights makes them.
std::vector<std::string> TensorNames(const ModelConfig &c) {
  std::vector<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (!c.tied_output) names.push_back("output.weight");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    for (const char *t : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                          "ffn_gate", "ffn_up", "ffn_down"}) {
      names.push_back(absl::StrCat("blk.", l, ".", t, ".weight"));
    }
  }
  return names;
}

}  // namespace

const SyntheticWeights &TinyWeights(uint64_t seed) {
  static auto *cache = new std::map<uint64_t, std::unique_ptr<SyntheticWeights>>();
  absl::MutexLock lock(&mu);
  auto &slot = (*cache)[seed];
  if (slot == nullptr) {
    auto made = SyntheticWeights::Create(TinyLlamaConfig(), GgmlType::kQ8_0, seed);
    if (!made.ok()) ADD_FAILURE() << made.status();
    slot = *std::move(made);
  }
  return *slot;
}

const std::string &TinyGgufPath(uint64_t seed) {
  const SyntheticWeights &w = TinyWeights(seed);
  static auto *paths = new std::map<uint64_t, std::string>();
  absl::MutexLock lock(&mu);
  std::string &path = (*paths)[seed];
  if (!path.empty()) return path;
  const ModelConfig &c = w.config();
  test::GgufWriter g;
  g.Add("general.architecture", test::TestValue::Str("llama"))
      .Add("general.name", test::TestValue::Str(c.name))
      .Add("llama.block_count", test::TestValue::U32(static_cast<uint32_t>(c.n_layers)))
      .Add("llama.context_length", test::TestValue::U32(static_cast<uint32_t>(c.n_ctx)))
      .Add("llama.embedding_length", test::TestValue::U32(static_cast<uint32_t>(c.n_embd)))
      .Add("llama.feed_forward_length", test::TestValue::U32(static_cast<uint32_t>(c.n_ff)))
      .Add("llama.attention.head_count", test::TestValue::U32(static_cast<uint32_t>(c.n_heads)))
      .Add("llama.attention.head_count_kv",
           test::TestValue::U32(static_cast<uint32_t>(c.n_kv_heads)))
      .Add("llama.attention.key_length", test::TestValue::U32(static_cast<uint32_t>(c.head_dim)))
      .Add("llama.rope.dimension_count", test::TestValue::U32(static_cast<uint32_t>(c.n_rot)))
      .Add("llama.rope.freq_base", test::TestValue::F32(c.rope_freq_base))
      .Add("llama.attention.layer_norm_rms_epsilon", test::TestValue::F32(c.rms_norm_eps));
  for (const std::string &name : TensorNames(c)) {
    absl::StatusOr<QuantMatrix> m = w.Matrix(name);
    if (!m.ok()) {
      ADD_FAILURE() << m.status();
      continue;
    }
    const QuantTraits *t = FindQuantTraits(m->type);
    const size_t row_bytes = static_cast<size_t>(m->cols / t->block_elems * t->block_bytes);
    std::string data;
    for (int64_t r = 0; r < m->rows; ++r) {
      data.append(reinterpret_cast<const char *>(m->row(r)), row_bytes);
    }
    std::vector<uint64_t> ne = {static_cast<uint64_t>(m->cols)};
    if (m->rows > 1) ne.push_back(static_cast<uint64_t>(m->rows));
    g.AddTensor(name, static_cast<uint32_t>(m->type), ne, std::move(data));
  }
  path = test::WriteTempFile(g.Build(), absl::StrCat("tiny_llama_", seed));
  // Removed when the test binary exits.
  static struct Cleanup {
    std::vector<std::string> files;
    ~Cleanup() {
      for (const std::string &f : files) std::remove(f.c_str());
    }
  } cleanup;
  cleanup.files.push_back(path);
  return path;
}

std::unique_ptr<Tokenizer> TinyTokenizer() {
  TokenizerVocab v;
  v.source = "tiny test vocabulary";
  v.model = "gpt2";
  for (int i = 0; i < TinyLlamaConfig().n_vocab; ++i) v.tokens.push_back(absl::StrCat("t", i));
  auto t = Tokenizer::Create(std::move(v));
  if (!t.ok()) {
    ADD_FAILURE() << t.status();
    return nullptr;
  }
  return *std::move(t);
}

}  // namespace tessera::testing_util
