// Where a model's weights come from: a GGUF file (mmapped, zero-copy) or synthetic random
// weights of a real shape (like vLLM's dummy load format), for benchmarking layouts whose files
// are not at hand. The forward pass only sees this interface.
//
// Thread-safety: immutable after construction.
#ifndef TESSERA_MODEL_WEIGHTS_H_
#define TESSERA_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "model/config.h"
#include "model/gguf.h"

namespace tessera {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  // The named tensor as a matrix (rows = product of the outer dims, cols = ne[0]); NotFound
  // naming the tensor and the source if absent. The view stays valid as long as the source.
  virtual absl::StatusOr<QuantMatrix> Matrix(std::string_view name) const = 0;
  // Human-readable origin for messages ("model.gguf", "synthetic llama3-8b Q4_0").
  virtual std::string description() const = 0;
};

// Weights of an opened GGUF file (which must outlive this).
class GgufWeights final : public WeightSource {
 public:
  // Reads and validates the config (llama architecture only).
  static absl::StatusOr<std::unique_ptr<GgufWeights>> Create(const GgufFile* file);
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<QuantMatrix> Matrix(std::string_view name) const override;
  std::string description() const override { return file_->path(); }
  const GgufFile& file() const { return *file_; }

 private:
  GgufWeights(const GgufFile* file, ModelConfig config) : file_(file), config_(std::move(config)) {}
  const GgufFile* file_;
  ModelConfig config_;
};

// Random weights of `config`'s shape: every matrix in `type`, norms in F32 (ones). Only the
// layers [0, n_layers) of the config are built (a benchmark may shrink config.n_layers).
// Rows are copies of a few dozen distinct quantized random rows, so building 8B takes seconds
// while the bytes streamed per token are exactly those of the real model.
// Fills `out` (rows x cols of `type`, rows packed at their exact size) with synthetic weights:
// N(0, 1/sqrt(cols)) rows quantized by the format's reference quantizer. Small matrices
// (rows * cols <= 2^20) get all-distinct rows; larger ones a few distinct rows tiled over the
// rest, each copy rotated by a different number of whole blocks, so that no two rows (and no two
// memory pages) hold the same bytes. `type` must have quant traits.
void FillSyntheticRows(GgmlType type, int64_t rows, int64_t cols, uint64_t seed, uint8_t* out);

class SyntheticWeights final : public WeightSource {
 public:
  static absl::StatusOr<std::unique_ptr<SyntheticWeights>> Create(const ModelConfig& config,
                                                                  GgmlType type, uint64_t seed);
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<QuantMatrix> Matrix(std::string_view name) const override;
  std::string description() const override;
  int64_t total_bytes() const { return total_bytes_; }

 private:
  explicit SyntheticWeights(ModelConfig config, GgmlType type)
      : config_(std::move(config)), type_(type) {}
  absl::Status Add(const std::string& name, GgmlType type, int64_t rows, int64_t cols,
                   uint64_t seed);

  ModelConfig config_;
  GgmlType type_;
  int64_t total_bytes_ = 0;
  std::unordered_map<std::string, QuantMatrix> matrices_;
  std::vector<std::unique_ptr<uint8_t[]>> storage_;
};

// A GGUF file opened together with its weights (the file outlives the weights that view it).
struct OpenedModel {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<GgufWeights> weights;
};
absl::StatusOr<OpenedModel> OpenGgufModel(const std::string& path);

}  // namespace tessera

#endif  // TESSERA_MODEL_WEIGHTS_H_
