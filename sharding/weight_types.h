// WeightTypes: the storage type of every weight tensor of a llama model, either read from a
// GGUF file or produced by a quantization recipe (sharding/recipes.h). With the config's shapes
// this gives the exact bytes of any tensor or slice of one, which is all the planner needs:
// no weights are read.
//
// Tensor shapes (ne[0] is the row length, i.e. the input dimension of a matmul):
//   token_embd, output           (n_embd, n_vocab)
//   attn_q, attn_output          (n_embd, q_dim) and (q_dim, n_embd)
//   attn_k, attn_v               (n_embd, kv_dim)
//   ffn_gate, ffn_up, ffn_down   (n_embd, n_ff), (n_embd, n_ff), (n_ff, n_embd)
//   attn_norm, ffn_norm, output_norm (n_embd); rope_freqs (n_rot / 2), when present
//
// Value type; thread-compatible.
#ifndef TESSERA_SHARDING_WEIGHT_TYPES_H_
#define TESSERA_SHARDING_WEIGHT_TYPES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quant/types.h"
#include "model/config.h"
#include "model/gguf.h"

namespace tessera {

struct LayerWeightTypes {
  GgmlType attn_norm = GgmlType::kF32, attn_q = GgmlType::kF16, attn_k = GgmlType::kF16,
           attn_v = GgmlType::kF16, attn_output = GgmlType::kF16, ffn_norm = GgmlType::kF32,
           ffn_gate = GgmlType::kF16, ffn_up = GgmlType::kF16, ffn_down = GgmlType::kF16;
};

struct WeightTypes {
  std::string source;  // where the types come from: "recipe Q4_K_M", "file model.gguf"
  GgmlType token_embd = GgmlType::kF16;
  GgmlType output = GgmlType::kF16;  // the type of token_embd when the config's output is tied
  GgmlType output_norm = GgmlType::kF32;
  bool has_rope_freqs = false;           // rope_freqs.weight (F32, n_rot / 2 values)
  std::vector<LayerWeightTypes> layers;  // one per layer
};

// The types of `file`'s tensors; `config` must come from LoadModelConfig(file) (which checked
// every tensor's presence and shape).
absl::StatusOr<WeightTypes> WeightTypesFromFile(const GgufFile& file, const ModelConfig& config);

// Exact bytes of `rows` rows of `cols` elements of type t; an error naming the type if `cols`
// is not a whole number of its blocks.
absl::StatusOr<int64_t> MatrixBytes(GgmlType t, int64_t rows, int64_t cols);

// The elements of type t that make one block (1 for float types).
int64_t BlockElems(GgmlType t);

// Bytes and elements of a whole model, in total and per type name.
struct WeightTotals {
  int64_t bytes = 0;
  int64_t elements = 0;
  std::map<std::string, int64_t> bytes_by_type;
  double bits_per_weight() const {
    return elements ? 8.0 * static_cast<double>(bytes) / static_cast<double>(elements) : 0.0;
  }
};
absl::StatusOr<WeightTotals> TotalWeightBytes(const ModelConfig& config, const WeightTypes& types);

}  // namespace tessera

#endif  // TESSERA_SHARDING_WEIGHT_TYPES_H_
