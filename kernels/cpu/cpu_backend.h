// CpuBackend: the Backend on host memory. LoadWeight copies each weight once into the
// backend's memory in 2 MiB pages (kernels/cpu/huge_pages.h: streaming from 4 KiB pages costs
// a page walk every 4 KiB), and on CPUs with AVX-512 VNNI Q4_0 / Q4_1 / Q8_0 matrices of whole
// stripes of 16 rows into the striped layout (without AMX), other Q4_0 / Q4_1 ones into the
// interleaved layout (kernels/quant/interleave.h), whose kernels keep up with memory at batch 1
// where the GGUF layout's do not; the mmap's pages are then left to the page cache. Where the
// kernel offers no transparent huge pages, only the interleaved copies are made. Matmuls use
// the fused quantized kernels of kernels/cpu/matmul.h; attention those of attention_kernels.h
// over a paged KV cache of f32 or f16 (PreferredKvType); the other ops are plain loops split
// across the same thread pool.
//
// Thread-safety: one engine thread at a time (the pool is not re-entrant).
#ifndef TESSERA_KERNELS_CPU_CPU_BACKEND_H_
#define TESSERA_KERNELS_CPU_CPU_BACKEND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace tessera {

class CpuBackend final : public Backend {
 public:
  // exact_matmul: multiply with the reference-dequantized weights in float64 instead of the
  // fused 8-bit kernels. Slow; for tests that check the rest of the forward pass tightly
  // against a float64 reference without the activation-quantization noise.
  // copy_weights: copy weights as described above; false keeps every weight in place (no copy:
  // the mmap's pages can be shared between processes). In the environment,
  // TESSERA_CPU_INTERLEAVE=0 keeps Q4_0 / Q4_1 / Q8_0 in the GGUF layout, TESSERA_CPU_STRIPES=0
  // takes the interleaved layout for Q4_0 / Q4_1 (GGUF for Q8_0) instead of the striped one,
  // and TESSERA_CPU_HUGE_PAGES=0 leaves the weights that are in the GGUF layout in the mmap.
  explicit CpuBackend(int n_threads, bool exact_matmul = false, bool copy_weights = true);
  std::string name() const override;
  int n_threads() const { return pool_.size(); }
  // The backend's threads, for work between steps that should run on them rather than beside
  // them (tessera bench's bandwidth probes; a second pool would compete with the spinning one).
  ThreadPool* pool() { return &pool_; }

  absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const QuantMatrix& host) override;
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t n_floats) override;
  absl::Status AllocateKvCache(const KvLayout& layout) override;
  // f16 (half the bytes a decode step reads) on CPUs with AVX-512, whose attention kernels
  // convert the rows as they load them; f32 elsewhere (an f16 cache works there too, through a
  // conversion pass) and for an exact_matmul backend, whose purpose is to follow a float64
  // reference tightly.
  KvType PreferredKvType() const override { return PreferredKvTypeFor(exact_matmul_); }
  static KvType PreferredKvTypeFor(bool exact_matmul);
  absl::Status CopyToHost(const float* device, int64_t n_floats, float* host) override;
  absl::Status CopyToDevice(const float* host, int64_t n_floats, float* device) override;
  bool WritesHostMemory() const override { return true; }

  absl::Status Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                     float* out) override;
  absl::Status MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
  absl::Status MatMuls(const float* x, int64_t n_tokens, const MatMulOut* outs,
                       int n_outs) override;
  absl::Status AddRmsNormMatMuls(float* x, const float* residual, const Weight& norm,
                                 int64_t n_tokens, float eps, float* h, const MatMulOut* outs,
                                 int n_outs) override;
  absl::Status SwiGluMatMul(const Weight& w, float* gate, const float* up, int64_t n_tokens,
                            float* y) override;
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
  // The cache row (head_dim elements of kv_layout_.type) of K (kv = 0) or V (kv = 1) of
  // `layer`, KV head `head`, at `slot`. Each KV head of a layer has its own region of slot rows
  // ((layer, kv, head, slot, head_dim)), so attention, which reads one head's rows at a time,
  // streams them: a sequence's blocks, when they are consecutive, are one run of memory.
  uint8_t* KvRow(int layer, int kv, int64_t slot, int head) {
    const KvLayout& L = kv_layout_;
    const int64_t per_head = L.n_blocks * L.block_tokens * L.head_dim;
    const int64_t elem =
        ((int64_t{layer} * 2 + kv) * L.n_kv_heads + head) * per_head + slot * L.head_dim;
    return kv_->data() + elem * KvTypeBytes(L.type);
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
  const bool stripes_;  // interleave_ takes the striped layout where it can
  const bool huge_pages_;
  HugePageArena weight_memory_;  // the weights' copies (each weight keeps its mapping alive)
  MatMulScratch scratch_;
  KvLayout kv_layout_;
  // (n_layers, 2, n_blocks * block_tokens, n_kv_heads, head_dim) of kv_layout_.type
  std::shared_ptr<HugePageMapping> kv_;
  std::vector<float> rope_cache_;  // RopeFrequencies(rope_cache_params_)
  RopeParams rope_cache_params_;
  std::vector<int32_t> rope_positions_;  // the positions of rope_cos_sin_
  std::vector<float> rope_cos_sin_;      // (token, pair): cos, sin
  std::vector<int64_t> attention_work_before_;  // Attention's work of the tokens before each
  std::vector<int64_t> attention_unit_before_;  // and its units
  std::vector<int64_t> attention_cuts_;         // the threads' first units
  std::vector<int64_t> attention_straddled_;    // the first units of items cut between threads
  std::vector<float> attention_parts_;  // chunks' partial softmaxes: each thread's, the cut items'
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_CPU_BACKEND_H_
