// Quantization recipes: the per-tensor type mix that the common GGUF quantizer (llama.cpp's
// `llama-quantize`, default options: no importance matrix, no type overrides) produces for a
// llama model under each well-known file type (F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M,
// Q2_K). A "Q4_K_M" file is not all Q4_K: the output is Q6_K, some attn_v and ffn_down
// tensors are Q6_K, and rows whose length is not a multiple of 256 fall back to 32-element
// formats. `tessera plan --arch` sizes models with these mixes, so its figures match real files.
//
// The rules live in one table in recipes.cc, which cites where they come from.
#ifndef TESSERA_SHARDING_RECIPES_H_
#define TESSERA_SHARDING_RECIPES_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "sharding/weight_types.h"

namespace tessera {

enum class QuantRecipe { kF16, kQ8_0, kQ6_K, kQ5_K_M, kQ4_K_M, kQ4_0, kQ3_K_M, kQ2_K };

// Every recipe, from the largest files to the smallest.
std::vector<QuantRecipe> AllQuantRecipes();

// "Q4_K_M".
std::string QuantRecipeName(QuantRecipe recipe);

// Parses a recipe name, case-insensitively ("q4_k_m"); the error lists the known names.
absl::StatusOr<QuantRecipe> ParseQuantRecipe(std::string_view name);

// The types the recipe gives each tensor of a model of this config. Norms stay F32. Where the
// quantizer would pick IQ4_NL (a k-quant row that is not whole 256-blocks under Q2_K/Q3_K), the
// result says Q4_0, whose blocks have the same size (18 bytes per 32 weights), since Tessera
// does not implement IQ4_NL: the bytes are exact, the type name is a stand-in.
WeightTypes RecipeWeightTypes(const ModelConfig& config, QuantRecipe recipe);

}  // namespace tessera

#endif  // TESSERA_SHARDING_RECIPES_H_
