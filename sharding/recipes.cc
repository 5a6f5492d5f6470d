// The recipe table.
//
// Facts from llama.cpp's quantizer (src/llama-quant.cpp: llama_tensor_get_type and the
// fallback for incompatible rows at its end; read in 2025 versions of the file), restated:
// - Only tensors of 2+ dimensions are quantized; norms (and rope_freqs) stay F32. F16 is not a
//   quantized type, so an F16 file is F16 throughout except those.
// - output.weight (or token_embd.weight when the model has no output tensor, i.e. tied) becomes
//   Q6_K unless the base type is Q8_0 (kept); if its rows are not whole blocks of the base type
//   it becomes Q8_0 instead.
// - token_embd.weight (untied) keeps the base type.
// - attn_v.weight: Q2_K -> Q4_K when n_head / n_head_kv >= 4, else Q3_K; Q3_K_M -> Q5_K for the
//   first two layers, Q4_K after; Q4_K_M and Q5_K_M -> Q6_K where use_more_bits(layer) (below).
//   For a 70B-class model (llama.cpp's LLM_TYPE_70B: 80 layers with GQA) a Q3_K or Q4_K attn_v
//   is raised to Q5_K, since attn_v is 8x smaller than attn_q there.
// - ffn_down.weight: Q2_K -> Q3_K; Q3_K_M -> Q5_K for layers < n_layers/16, Q4_K after (llama
//   is not Falcon); Q4_K_M and Q5_K_M -> Q6_K where use_more_bits(layer).
// - attn_output.weight: Q2_K -> Q3_K; Q3_K_M -> Q4_K.
// - use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2 (integer division): the
//   first and last eighth of the layers and every third layer in between.
// - A k-quant (256-element blocks) row whose length is not a multiple of 256 falls back:
//   Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; and to F16 if the row is not
//   whole 32-element blocks either.
// Validated against published file sizes in tests/sharding/recipes_test.cc.
#include "sharding/recipes.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

using T = GgmlType;

// Per-layer exceptions to the base type.
enum class AttnVRule { kBase, kMoreBitsQ6K, kFirstTwoQ5KThenQ4K, kGqaQ4KElseQ3K };
enum class FfnDownRule { kBase, kMoreBitsQ6K, kFirstSixteenthQ5KThenQ4K, kQ3K };

struct Recipe {
  QuantRecipe id;
  const char* name;
  T base;    // every 2-D tensor not named below
  T output;  // output.weight (token_embd.weight if tied)
  AttnVRule attn_v;
  FfnDownRule ffn_down;
  T attn_output;  // kF32 here: the base type
};

constexpr Recipe kRecipes[] = {
    {QuantRecipe::kF16, "F16", T::kF16, T::kF16, AttnVRule::kBase, FfnDownRule::kBase, T::kF32},
    {QuantRecipe::kQ8_0, "Q8_0", T::kQ8_0, T::kQ8_0, AttnVRule::kBase, FfnDownRule::kBase, T::kF32},
    {QuantRecipe::kQ6_K, "Q6_K", T::kQ6_K, T::kQ6_K, AttnVRule::kBase, FfnDownRule::kBase, T::kF32},
    {QuantRecipe::kQ5_K_M, "Q5_K_M", T::kQ5_K, T::kQ6_K, AttnVRule::kMoreBitsQ6K,
     FfnDownRule::kMoreBitsQ6K, T::kF32},
    {QuantRecipe::kQ4_K_M, "Q4_K_M", T::kQ4_K, T::kQ6_K, AttnVRule::kMoreBitsQ6K,
     FfnDownRule::kMoreBitsQ6K, T::kF32},
    {QuantRecipe::kQ4_0, "Q4_0", T::kQ4_0, T::kQ6_K, AttnVRule::kBase, FfnDownRule::kBase, T::kF32},
    {QuantRecipe::kQ3_K_M, "Q3_K_M", T::kQ3_K, T::kQ6_K, AttnVRule::kFirstTwoQ5KThenQ4K,
     FfnDownRule::kFirstSixteenthQ5KThenQ4K, T::kQ4_K},
    {QuantRecipe::kQ2_K, "Q2_K", T::kQ2_K, T::kQ6_K, AttnVRule::kGqaQ4KElseQ3K, FfnDownRule::kQ3K,
     T::kQ3_K},
};

const Recipe& Find(QuantRecipe id) {
  for (const Recipe& r : kRecipes) {
    if (r.id == id) return r;
  }
  return kRecipes[0];  // unreachable: every enumerator has a row
}

bool UseMoreBits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// The quantizer's fallback for a row of `cols` elements that is not whole blocks of `t`.
T Fit(T t, int64_t cols) {
  if (cols % BlockElems(t) == 0) return t;
  T fallback = T::kF16;
  switch (t) {
    case T::kQ2_K:
    case T::kQ3_K:
      fallback = T::kQ4_0;  // IQ4_NL in llama.cpp; same block size (see recipes.h)
      break;
    case T::kQ4_K:
      fallback = T::kQ5_0;
      break;
    case T::kQ5_K:
      fallback = T::kQ5_1;
      break;
    case T::kQ6_K:
      fallback = T::kQ8_0;
      break;
    default:
      break;
  }
  return cols % BlockElems(fallback) == 0 ? fallback : T::kF16;
}

}  // namespace

std::vector<QuantRecipe> AllQuantRecipes() {
  std::vector<QuantRecipe> all;
  for (const Recipe& r : kRecipes) all.push_back(r.id);
  return all;
}

std::string QuantRecipeName(QuantRecipe recipe) { return Find(recipe).name; }

absl::StatusOr<QuantRecipe> ParseQuantRecipe(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  std::vector<std::string> known;
  for (const Recipe& r : kRecipes) {
    if (upper == r.name) return r.id;
    known.emplace_back(r.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown quantization recipe '", std::string(name),
                                                 "' (known: ", absl::StrJoin(known, ", "), ")"));
}

WeightTypes RecipeWeightTypes(const ModelConfig& c, QuantRecipe id) {
  const Recipe& r = Find(id);
  const bool quantized = r.base != T::kF16;
  const int64_t n = c.n_layers;
  const bool class_70b = n == 80 && c.n_kv_heads < c.n_heads;
  const int64_t e = c.n_embd;

  WeightTypes w;
  w.source = absl::StrCat("recipe ", r.name);
  w.output_norm = T::kF32;
  w.has_rope_freqs = c.rope_scaling.has_rope_freqs_tensor;
  // The output rule: Q8_0 when the rows are not whole blocks of the base type.
  T output = r.output;
  if (quantized && e % BlockElems(r.base) != 0) output = T::kQ8_0;
  output = Fit(output, e);
  w.output = output;
  w.token_embd = c.tied_output ? output : Fit(r.base, e);

  for (int64_t i = 0; i < n; ++i) {
    LayerWeightTypes t;
    t.attn_norm = t.ffn_norm = T::kF32;
    t.attn_q = Fit(r.base, e);
    t.attn_k = Fit(r.base, e);
    t.ffn_gate = Fit(r.base, e);
    t.ffn_up = Fit(r.base, e);
    t.attn_output = Fit(r.attn_output == T::kF32 ? r.base : r.attn_output, c.q_dim());

    T v = r.base;
    switch (r.attn_v) {
      case AttnVRule::kBase:
        break;
      case AttnVRule::kMoreBitsQ6K:
        if (UseMoreBits(i, n)) v = T::kQ6_K;
        break;
      case AttnVRule::kFirstTwoQ5KThenQ4K:
        v = i < 2 ? T::kQ5_K : T::kQ4_K;
        break;
      case AttnVRule::kGqaQ4KElseQ3K:
        v = c.n_heads / c.n_kv_heads >= 4 ? T::kQ4_K : T::kQ3_K;
        break;
    }
    if (class_70b && quantized && (v == T::kQ3_K || v == T::kQ4_K)) v = T::kQ5_K;
    t.attn_v = Fit(v, e);

    T down = r.base;
    switch (r.ffn_down) {
      case FfnDownRule::kBase:
        break;
      case FfnDownRule::kMoreBitsQ6K:
        if (UseMoreBits(i, n)) down = T::kQ6_K;
        break;
      case FfnDownRule::kFirstSixteenthQ5KThenQ4K:
        down = i < n / 16 ? T::kQ5_K : T::kQ4_K;
        break;
      case FfnDownRule::kQ3K:
        down = T::kQ3_K;
        break;
    }
    t.ffn_down = Fit(down, c.n_ff);
    w.layers.push_back(t);
  }
  return w;
}

}  // namespace tessera
