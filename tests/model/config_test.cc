// ModelConfig from GGUF metadata: values, defaults, and the errors for inconsistent models.
#include "model/config.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"
#include "tests/model/gguf_writer_testutil.h"

namespace tessera {
namespace {

using test::GgufWriter;
using test::TestValue;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint32_t kF32 = 0, kQ4_0 = 2, kQ8_0 = 8;

// Builds the file and loads its config; keeps the bytes alive for the duration of the call.
absl::StatusOr<ModelConfig> Load(const GgufWriter& w) {
  const std::string bytes = w.Build();
  absl::StatusOr<std::unique_ptr<GgufFile>> f =
      GgufFile::FromBuffer("m.gguf", bytes.data(), bytes.size());
  if (!f.ok()) return f.status();
  return LoadModelConfig(**f);
}

std::string ErrorOf(const GgufWriter& w) {
  absl::StatusOr<ModelConfig> c = Load(w);
  return c.ok() ? "OK" : std::string(c.status().message());
}

void SetKey(GgufWriter* w, const std::string& key, TestValue v) {
  for (auto& kv : w->kvs) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  w->Add(key, std::move(v));
}

void RemoveKey(GgufWriter* w, const std::string& key) {
  std::erase_if(w->kvs, [&](const auto& kv) { return kv.first == key; });
}

test::TestTensor* FindTensor(GgufWriter* w, const std::string& name) {
  for (auto& t : w->tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

TEST(ModelConfigTest, TinyLlama) {
  absl::StatusOr<ModelConfig> c = Load(test::TinyLlamaWriter());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->name, "tiny");
  EXPECT_EQ(c->n_embd, 64);
  EXPECT_EQ(c->n_layers, 2);
  EXPECT_EQ(c->n_heads, 4);
  EXPECT_EQ(c->n_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->n_rot, 16);
  EXPECT_EQ(c->n_ff, 96);
  EXPECT_EQ(c->n_vocab, 40);  // from tokenizer.ggml.tokens
  EXPECT_EQ(c->n_ctx, 256);
  EXPECT_EQ(c->rope_freq_base, 500000.0f);
  EXPECT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_TRUE(c->tied_output);
  EXPECT_EQ(c->rope_scaling.type, "none");
  EXPECT_FALSE(c->rope_scaling.has_rope_freqs_tensor);
  EXPECT_EQ(c->q_dim(), 64);
  EXPECT_EQ(c->kv_dim(), 32);
  EXPECT_EQ(c->n_gqa(), 2);
}

TEST(ModelConfigTest, DefaultsAndOptionalKeys) {
  GgufWriter w = test::TinyLlamaWriter();
  RemoveKey(&w, "llama.rope.freq_base");
  RemoveKey(&w, "llama.attention.head_count_kv");
  RemoveKey(&w, "general.name");
  for (auto& t : w.tensors) {  // without head_count_kv, K/V have n_heads heads
    if (t.name.find("attn_k") != std::string::npos || t.name.find("attn_v") != std::string::npos) {
      t.ne = {64, 64};
    }
  }
  absl::StatusOr<ModelConfig> c = Load(w);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_freq_base, 10000.0f);
  EXPECT_EQ(c->n_kv_heads, 4);
  EXPECT_EQ(c->name, "");

  // vocab_size wins over the token list; the token list wins over the embedding rows.
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.vocab_size", TestValue::U32(40));
  EXPECT_EQ(Load(w)->n_vocab, 40);
  SetKey(&w, "llama.vocab_size", TestValue::U32(41));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("token_embd.weight"), HasSubstr("[64, 40]"),
                                HasSubstr("expected [64, 41]")));
  w = test::TinyLlamaWriter();
  RemoveKey(&w, "tokenizer.ggml.tokens");
  EXPECT_EQ(Load(w)->n_vocab, 40);  // from token_embd.weight
}

TEST(ModelConfigTest, UntiedOutputAndRopeScaling) {
  GgufWriter w = test::TinyLlamaWriter();
  w.AddTensor("output.weight", kQ8_0, {64, 40});
  w.AddTensor("rope_freqs.weight", kF32, {8});
  SetKey(&w, "llama.rope.scaling.type", TestValue::Str("llama3"));
  SetKey(&w, "llama.rope.scaling.factor", TestValue::F32(8.0f));
  SetKey(&w, "llama.rope.scaling.original_context_length", TestValue::U32(8192));
  SetKey(&w, "llama.rope.scaling.low_freq_factor", TestValue::F32(1.0f));
  SetKey(&w, "llama.rope.scaling.high_freq_factor", TestValue::F32(4.0f));
  absl::StatusOr<ModelConfig> c = Load(w);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tied_output);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_EQ(c->rope_scaling.factor, 8.0f);
  EXPECT_EQ(c->rope_scaling.original_context_length, 8192);
  EXPECT_EQ(c->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_TRUE(c->rope_scaling.has_rope_freqs_tensor);

  FindTensor(&w, "rope_freqs.weight")->ne = {16};
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("rope_freqs.weight"), HasSubstr("expected [8]")));
  FindTensor(&w, "rope_freqs.weight")->ne = {8};
  FindTensor(&w, "output.weight")->ne = {64, 32};
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'output.weight' has shape [64, 32]"),
                                HasSubstr("expected [64, 40] (n_embd, n_vocab)")));
  SetKey(&w, "llama.rope.scaling.type", TestValue::Str("ntk"));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("llama.rope.scaling.type"), HasSubstr("'ntk'")));
}

TEST(ModelConfigTest, HeadDimFromKeyLength) {
  // n_embd 64 with 4 heads of 32: q_dim 128 != n_embd, as in some Mistral/Gemma-style models.
  GgufWriter w = test::TinyLlamaWriter();
  SetKey(&w, "llama.attention.key_length", TestValue::U32(32));
  SetKey(&w, "llama.attention.value_length", TestValue::U32(32));
  SetKey(&w, "llama.rope.dimension_count", TestValue::U32(32));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    FindTensor(&w, p + "attn_q.weight")->ne = {64, 128};
    FindTensor(&w, p + "attn_k.weight")->ne = {64, 64};
    FindTensor(&w, p + "attn_v.weight")->ne = {64, 64};
    FindTensor(&w, p + "attn_output.weight")->ne = {128, 64};
  }
  absl::StatusOr<ModelConfig> c = Load(w);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->q_dim(), 128);
  EXPECT_EQ(c->kv_dim(), 64);
  SetKey(&w, "llama.attention.value_length", TestValue::U32(16));
  EXPECT_THAT(ErrorOf(w),
              AllOf(HasSubstr("llama.attention.value_length 16"), HasSubstr("key length 32")));
  SetKey(&w, "llama.attention.value_length", TestValue::U32(32));
  SetKey(&w, "llama.rope.dimension_count", TestValue::U32(33));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("llama.rope.dimension_count is 33"),
                                HasSubstr("even number <= head_dim 32")));
}

TEST(ModelConfigTest, RefusesOtherArchitectures) {
  GgufWriter w = test::TinyLlamaWriter();
  SetKey(&w, "general.architecture", TestValue::Str("gpt2"));
  absl::StatusOr<ModelConfig> c = Load(w);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("m.gguf"), HasSubstr("architecture 'gpt2' is not supported")));
  RemoveKey(&w, "general.architecture");
  EXPECT_THAT(ErrorOf(w), HasSubstr("'general.architecture' is missing"));
}

TEST(ModelConfigTest, BadHyperParameters) {
  GgufWriter w = test::TinyLlamaWriter();
  SetKey(&w, "llama.attention.head_count_kv", TestValue::U32(3));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("n_heads 4"), HasSubstr("not a multiple of n_kv_heads 3"),
                                HasSubstr("llama.attention.head_count_kv")));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.attention.head_count", TestValue::U32(5));
  SetKey(&w, "llama.attention.head_count_kv", TestValue::U32(5));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("n_embd 64 is not a multiple of n_heads 5"),
                                HasSubstr("key_length")));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.block_count", TestValue::U32(0));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'llama.block_count' is 0"), HasSubstr("expected 1..")));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.block_count", TestValue::Str("2"));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'llama.block_count'"), HasSubstr("has type STRING")));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.block_count", TestValue::U64(uint64_t{1} << 40));
  EXPECT_THAT(ErrorOf(w), HasSubstr("'llama.block_count' is 1099511627776"));
  w = test::TinyLlamaWriter();
  RemoveKey(&w, "llama.feed_forward_length");
  EXPECT_THAT(ErrorOf(w), HasSubstr("'llama.feed_forward_length' is missing"));
  w = test::TinyLlamaWriter();
  RemoveKey(&w, "llama.attention.layer_norm_rms_epsilon");
  EXPECT_THAT(ErrorOf(w), HasSubstr("'llama.attention.layer_norm_rms_epsilon' is missing"));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.attention.layer_norm_rms_epsilon", TestValue::F32(-1.0f));
  EXPECT_THAT(ErrorOf(w), HasSubstr("layer_norm_rms_epsilon' is -1"));
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.rope.freq_base", TestValue::U32(10000));
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'llama.rope.freq_base'"), HasSubstr("UINT32")));
  // An integer type wider than needed is fine when the value fits.
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.block_count", TestValue::I64(2));
  EXPECT_EQ(ErrorOf(w), "OK");
}

TEST(ModelConfigTest, RequiredTensorsAndShapes) {
  GgufWriter w = test::TinyLlamaWriter();
  std::erase_if(w.tensors, [](const auto& t) { return t.name == "blk.1.ffn_up.weight"; });
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("m.gguf"), HasSubstr("tensor 'blk.1.ffn_up.weight' "
                                                               "is missing")));
  w = test::TinyLlamaWriter();
  std::erase_if(w.tensors, [](const auto& t) { return t.name == "output_norm.weight"; });
  EXPECT_THAT(ErrorOf(w), HasSubstr("'output_norm.weight' is missing"));
  w = test::TinyLlamaWriter();
  FindTensor(&w, "blk.0.attn_k.weight")->ne = {64, 64};
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'blk.0.attn_k.weight' has shape [64, 64]"),
                                HasSubstr("expected [64, 32] (n_embd, n_kv_heads * head_dim)")));
  w = test::TinyLlamaWriter();
  FindTensor(&w, "blk.1.ffn_down.weight")->ne = {64, 96};
  EXPECT_THAT(ErrorOf(w), AllOf(HasSubstr("'blk.1.ffn_down.weight' has shape [64, 96]"),
                                HasSubstr("expected [96, 64] (n_ff, n_embd)")));
  w = test::TinyLlamaWriter();
  FindTensor(&w, "blk.0.attn_norm.weight")->ne = {64, 2};
  EXPECT_THAT(ErrorOf(w), HasSubstr("'blk.0.attn_norm.weight' has shape [64, 2]"));
  // A trailing dimension of 1 is the same shape.
  w = test::TinyLlamaWriter();
  FindTensor(&w, "blk.0.attn_norm.weight")->ne = {64, 1};
  EXPECT_EQ(ErrorOf(w), "OK");
  // More layers declared than present.
  w = test::TinyLlamaWriter();
  SetKey(&w, "llama.block_count", TestValue::U32(3));
  EXPECT_THAT(ErrorOf(w), HasSubstr("'blk.2.attn_norm.weight' is missing"));
}

TEST(ModelConfigTest, RealModel) {
  const char* path = std::getenv("TESSERA_TEST_MODEL");
  if (path == nullptr || access(path, R_OK) != 0) {
    GTEST_SKIP() << "real model not found (set TESSERA_TEST_MODEL; scripts/fetch-model fetches "
                    "SmolLM2-135M-Instruct.Q4_1.gguf)";
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<ModelConfig> c = LoadModelConfig(**f);
  ASSERT_TRUE(c.ok()) << c.status();
  // Values as published in SmolLM2-135M's config.json.
  EXPECT_EQ(c->n_embd, 576);
  EXPECT_EQ(c->n_layers, 30);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->n_rot, 64);
  EXPECT_EQ(c->n_ff, 1536);
  EXPECT_EQ(c->n_vocab, 49152);
  EXPECT_EQ(c->n_ctx, 8192);
  EXPECT_EQ(c->rope_freq_base, 100000.0f);
  EXPECT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c->tied_output);
}

}  // namespace
}  // namespace tessera
