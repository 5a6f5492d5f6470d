// CpuBackend: the Backend on host memory. Weights stay in the GGUF mmap (LoadWeight copies
// nothing), except Q4_0 / Q4_1 matrices on CPUs with AVX-512 VNNI: those are copied once into
// the interleaved layout (kernels/quant/interleave.h), whose batch-1 kernels stream at the
// memory bandwidth where the GGUF layout's fall short of it; the mmap's pages are then left
// to the page cache. Matmuls use the fused quantized kernels of kernels/cpu/matmul.h; the
// other ops are plain loops split across the same thread pool.
//
// Thread-safety: one engine thread at a time (the pool is not re-entrant).
#ifndef TESSERA_KERNELS_CPU_CPU_BACKEND_H_
#define TESSERA_KERNELS_CPU_CPU_BACKEND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace tessera {

class CpuBackend final : public Backend {
 public:
  // exact_matmul: multiply with the reference-dequantized weights in float64 instead of the
  // fused 8-bit kernels. Slow; for tests that check the rest of the forward pass tightly
  // against a float64 reference without the activation-quantization noise.
  // interleave: store Q4_0 / Q4_1 weights interleaved where this CPU's kernels read that layout
  // faster (AVX-512 VNNI); false, or TESSERA_CPU_INTERLEAVE=0 in the environment, keeps every
  // weight in place (no copy: the mmap's pages can be shared between processes).
  explicit CpuBackend(int n_threads, bool exact_matmul = false, bool interleave = true);
  std::string name() const override;
  int n_threads() const { return pool_.size(); }

  absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const QuantMatrix& host) override;
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t n_floats) override;
  absl::Status AllocateKvCache(const KvLayout& layout) override;
  absl::Status CopyToHost(const float* device, int64_t n_floats, float* host) override;
  absl::Status CopyToDevice(const float* host, int64_t n_floats, float* device) override;

  absl::Status Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                     float* out) override;
  absl::Status MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
  absl::Status MatMuls(const float* x, int64_t n_tokens, const MatMulOut* outs,
                       int n_outs) override;
  absl::Status RmsNorm(const float* x, const Weight& weight, int64_t n_tokens, float eps,
                       float* y) override;
  absl::Status Rope(float* x, int64_t n_tokens, int n_heads, const int32_t* positions,
                    const RopeParams& params) override;
  absl::Status SwiGlu(const float* gate, const float* up, int64_t n_elems, float* out) override;
  absl::Status GatherRows(const float* src, const int32_t* rows, int64_t n_rows, int64_t dim,
                          float* dst) override;
  absl::Status Add(float* x, const float* y, int64_t n_elems) override;
  absl::Status Attention(int layer, const float* q, const float* k, const float* v, int n_heads,
                         const AttentionBatch& batch, float* out) override;

 private:
  float* KvSlot(int layer, int kv, int64_t slot) {
    const int64_t token_floats = int64_t{kv_layout_.n_kv_heads} * kv_layout_.head_dim;
    const int64_t per_kv = kv_layout_.n_blocks * kv_layout_.block_tokens * token_floats;
    return kv_.data() + (int64_t{layer} * 2 + kv) * per_kv + slot * token_floats;
  }

  absl::Status ExactMatMul(const QuantMatrix& w, const float* x, int64_t n_tokens, float* y);

  // fn(begin, end) over shares of [0, n) on the pool's threads (bounds multiples of granule),
  // or fn(0, n) on the caller when n < min_parallel: element-wise work, each element computed
  // the same way whatever the split, so results do not depend on it.
  void ParallelFor(int64_t n, int64_t granule, int64_t min_parallel,
                   const std::function<void(int64_t, int64_t)>& fn);

  ThreadPool pool_;
  const bool exact_matmul_;
  const bool interleave_;
  MatMulScratch scratch_;
  KvLayout kv_layout_;
  std::vector<float> kv_;  // (n_layers, 2, n_blocks * block_tokens, n_kv_heads, head_dim)
  std::vector<float> rope_cache_;
  RopeParams rope_cache_params_;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_CPU_BACKEND_H_
