#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<GgufWeights>> GgufWeights::Create(const GgufFile* file) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(*file);
  if (!config.ok()) return config.status();
  return std::unique_ptr<GgufWeights>(new GgufWeights(file, *std::move(config)));
}

absl::StatusOr<QuantMatrix> GgufWeights::Matrix(std::string_view name) const {
  absl::StatusOr<const GgufTensorInfo*> t = file_->GetTensor(name);
  if (!t.ok()) return t.status();
  return file_->Matrix(**t);
}

absl::StatusOr<OpenedModel> OpenGgufModel(const std::string& path) {
  OpenedModel m;
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return file.status();
  m.file = *std::move(file);
  absl::StatusOr<std::unique_ptr<GgufWeights>> weights = GgufWeights::Create(m.file.get());
  if (!weights.ok()) return weights.status();
  m.weights = *std::move(weights);
  return m;
}

absl::StatusOr<std::unique_ptr<SyntheticWeights>> SyntheticWeights::Create(
    const ModelConfig& c, GgmlType type, uint64_t seed) {
  const QuantTraits* traits = FindQuantTraits(type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported weight type ", GgmlTypeName(type)));
  }
  for (int64_t cols : {c.n_embd, c.n_ff, c.q_dim()}) {
    if (cols % traits->block_elems != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "synthetic ", c.name, ": a row of ", cols, " elements is not a whole number of ",
          traits->name, " blocks (", traits->block_elems, ")"));
    }
  }
  auto w = std::unique_ptr<SyntheticWeights>(new SyntheticWeights(c, type));
  auto add = [&](const std::string& name, GgmlType t, int64_t rows, int64_t cols) {
    return w->Add(name, t, rows, cols, seed++);
  };
  absl::Status s = add("token_embd.weight", type, c.n_vocab, c.n_embd);
  if (s.ok()) s = add("output_norm.weight", GgmlType::kF32, 1, c.n_embd);
  if (s.ok() && !c.tied_output) s = add("output.weight", type, c.n_vocab, c.n_embd);
  for (int64_t l = 0; s.ok() && l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    s = add(p + "attn_norm.weight", GgmlType::kF32, 1, c.n_embd);
    if (s.ok()) s = add(p + "attn_q.weight", type, c.q_dim(), c.n_embd);
    if (s.ok()) s = add(p + "attn_k.weight", type, c.kv_dim(), c.n_embd);
    if (s.ok()) s = add(p + "attn_v.weight", type, c.kv_dim(), c.n_embd);
    if (s.ok()) s = add(p + "attn_output.weight", type, c.n_embd, c.q_dim());
    if (s.ok()) s = add(p + "ffn_norm.weight", GgmlType::kF32, 1, c.n_embd);
    if (s.ok()) s = add(p + "ffn_gate.weight", type, c.n_ff, c.n_embd);
    if (s.ok()) s = add(p + "ffn_up.weight", type, c.n_ff, c.n_embd);
    if (s.ok()) s = add(p + "ffn_down.weight", type, c.n_embd, c.n_ff);
  }
  if (!s.ok()) return s;
  return w;
}

void FillSyntheticRows(GgmlType type, int64_t rows, int64_t cols, uint64_t seed, uint8_t* out) {
  // Tiling keeps large models cheap to build; the rotation keeps every row's bytes distinct (a
  // hypervisor that merges identical pages served repeating rows from cache, and `bench
  // --synthetic` read faster than the memory allows). N(0, 1/sqrt(cols)) keeps y = Wx at unit
  // scale.
  const QuantTraits* traits = FindQuantTraits(type);
  const int64_t row_bytes = cols / traits->block_elems * traits->block_bytes;
  constexpr int64_t kDistinctRows = 37;
  const int64_t distinct = rows * cols <= (int64_t{1} << 20) ? rows : std::min(rows, kDistinctRows);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(cols)));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < distinct; ++r) {
    for (float& v : row) v = normal(rng);
    traits->quantize_ref(row.data(), out + r * row_bytes, cols);
  }
  const int64_t n_blocks = row_bytes / traits->block_bytes;
  for (int64_t r = distinct; r < rows; ++r) {
    const uint8_t* src = out + (r % distinct) * row_bytes;
    uint8_t* dst = out + r * row_bytes;
    const int64_t split = (r / distinct) % n_blocks * traits->block_bytes;
    std::memcpy(dst, src + split, static_cast<size_t>(row_bytes - split));
    std::memcpy(dst + row_bytes - split, src, static_cast<size_t>(split));
  }
}

absl::Status SyntheticWeights::Add(const std::string& name, GgmlType type, int64_t rows,
                                   int64_t cols, uint64_t seed) {
  const QuantTraits* traits = FindQuantTraits(type);
  const int64_t row_bytes = cols / traits->block_elems * traits->block_bytes;
  auto data = std::unique_ptr<uint8_t[]>(new (std::nothrow) uint8_t[rows * row_bytes]);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("synthetic weights: cannot allocate ",
                                                     rows * row_bytes, " bytes for ", name));
  }
  if (type == GgmlType::kF32 && rows == 1) {
    // Norm weights: ones, so activations keep a realistic scale layer after layer.
    std::vector<float> ones(static_cast<size_t>(cols), 1.0f);
    std::memcpy(data.get(), ones.data(), ones.size() * sizeof(float));
  } else {
    FillSyntheticRows(type, rows, cols, seed, data.get());
  }
  matrices_[name] = QuantMatrix{type, rows, cols, row_bytes, data.get()};
  total_bytes_ += rows * row_bytes;
  storage_.push_back(std::move(data));
  return absl::OkStatus();
}

absl::StatusOr<QuantMatrix> SyntheticWeights::Matrix(std::string_view name) const {
  auto it = matrices_.find(std::string(name));
  if (it == matrices_.end()) {
    return absl::NotFoundError(absl::StrCat(description(), ": no tensor '", std::string(name), "'"));
  }
  return it->second;
}

std::string SyntheticWeights::description() const {
  return absl::StrCat("synthetic ", config_.name, " ", GgmlTypeName(type_));
}

}  // namespace tessera
