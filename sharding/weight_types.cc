#include "sharding/weight_types.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

absl::StatusOr<GgmlType> TypeOf(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(f.path(), ": tensor '", name, "' is missing"));
  }
  return t->type();
}

}  // namespace

int64_t BlockElems(GgmlType t) {
  const QuantTraits* traits = FindQuantTraits(t);
  return traits == nullptr ? 1 : traits->block_elems;
}

absl::StatusOr<int64_t> MatrixBytes(GgmlType t, int64_t rows, int64_t cols) {
  const QuantTraits* traits = FindQuantTraits(t);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor type ", GgmlTypeName(t), " is not implemented"));
  }
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("negative row count ", rows));
  TESSERA_ASSIGN_OR_RETURN(int64_t row_bytes, RowBytes(*traits, cols));
  return rows * row_bytes;
}

absl::StatusOr<WeightTypes> WeightTypesFromFile(const GgufFile& file, const ModelConfig& c) {
  WeightTypes w;
  w.source = absl::StrCat("file ", file.path());
  TESSERA_ASSIGN_OR_RETURN(w.token_embd, TypeOf(file, "token_embd.weight"));
  TESSERA_ASSIGN_OR_RETURN(w.output_norm, TypeOf(file, "output_norm.weight"));
  if (c.tied_output) {
    w.output = w.token_embd;
  } else {
    TESSERA_ASSIGN_OR_RETURN(w.output, TypeOf(file, "output.weight"));
  }
  w.has_rope_freqs = file.FindTensor("rope_freqs.weight") != nullptr;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    LayerWeightTypes t;
    TESSERA_ASSIGN_OR_RETURN(t.attn_norm, TypeOf(file, p + "attn_norm.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.attn_q, TypeOf(file, p + "attn_q.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.attn_k, TypeOf(file, p + "attn_k.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.attn_v, TypeOf(file, p + "attn_v.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.attn_output, TypeOf(file, p + "attn_output.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.ffn_norm, TypeOf(file, p + "ffn_norm.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.ffn_gate, TypeOf(file, p + "ffn_gate.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.ffn_up, TypeOf(file, p + "ffn_up.weight"));
    TESSERA_ASSIGN_OR_RETURN(t.ffn_down, TypeOf(file, p + "ffn_down.weight"));
    w.layers.push_back(t);
  }
  return w;
}

absl::StatusOr<WeightTotals> TotalWeightBytes(const ModelConfig& c, const WeightTypes& w) {
  if (static_cast<int64_t>(w.layers.size()) != c.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(w.source, ": types for ", w.layers.size(),
                                                   " layers, the config has ", c.n_layers));
  }
  WeightTotals totals;
  auto add = [&](const char* name, GgmlType t, int64_t rows, int64_t cols) -> absl::Status {
    absl::StatusOr<int64_t> b = MatrixBytes(t, rows, cols);
    if (!b.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(w.source, ": ", name, ": ", b.status().message()));
    }
    totals.bytes += *b;
    totals.elements += rows * cols;
    totals.bytes_by_type[GgmlTypeName(t)] += *b;
    return absl::OkStatus();
  };
  const int64_t e = c.n_embd;
  TESSERA_RETURN_IF_ERROR(add("token_embd", w.token_embd, c.n_vocab, e));
  if (!c.tied_output) TESSERA_RETURN_IF_ERROR(add("output", w.output, c.n_vocab, e));
  TESSERA_RETURN_IF_ERROR(add("output_norm", w.output_norm, 1, e));
  if (w.has_rope_freqs) TESSERA_RETURN_IF_ERROR(add("rope_freqs", GgmlType::kF32, 1, c.n_rot / 2));
  for (const LayerWeightTypes& t : w.layers) {
    TESSERA_RETURN_IF_ERROR(add("attn_norm", t.attn_norm, 1, e));
    TESSERA_RETURN_IF_ERROR(add("attn_q", t.attn_q, c.q_dim(), e));
    TESSERA_RETURN_IF_ERROR(add("attn_k", t.attn_k, c.kv_dim(), e));
    TESSERA_RETURN_IF_ERROR(add("attn_v", t.attn_v, c.kv_dim(), e));
    TESSERA_RETURN_IF_ERROR(add("attn_output", t.attn_output, e, c.q_dim()));
    TESSERA_RETURN_IF_ERROR(add("ffn_norm", t.ffn_norm, 1, e));
    TESSERA_RETURN_IF_ERROR(add("ffn_gate", t.ffn_gate, c.n_ff, e));
    TESSERA_RETURN_IF_ERROR(add("ffn_up", t.ffn_up, c.n_ff, e));
    TESSERA_RETURN_IF_ERROR(add("ffn_down", t.ffn_down, e, c.n_ff));
  }
  return totals;
}

}  // namespace tessera
