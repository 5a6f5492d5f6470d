// CudaBackend: the Backend on one NVIDIA GPU (kernels/backend.h).
//
// Weights are uploaded once by LoadWeight: the GGUF blocks are copied as stored (no
// dequantized copy) into device memory, row by row straight from the caller's host memory (the
// mmap), with rows packed at their exact size. Two loads of the same host tensor (a tied
// embedding used as the output matrix) share one upload. Activations and the paged KV cache
// (float32, the CPU layout) live in device memory; per-step metadata given in host memory
// (token ids, positions, block tables) is uploaded as needed.
//
// MatMul: up to max_fused_tokens() tokens (kernels/cuda/launch.h) run the fused dequantize x
// matvec kernels, which read each weight block once for all tokens; larger batches (prefill)
// dequantize the weight in row chunks to fp16 and multiply with cublasGemmEx (fp32
// accumulation) -- a first version that a fused tensor-core kernel should replace.
//
// Every CUDA call and launch is checked (kernels/cuda/cuda_check.h). Kernels run
// asynchronously on one stream; CopyToHost synchronises, so a fault inside a kernel surfaces
// there at the latest. VRAM is accounted by category (weights, KV cache, workspace).
//
// Thread-safety: one engine thread at a time, like every Backend. The backend must outlive the
// weights and buffers it hands out.
#ifndef TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_
#define TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

struct CUstream_st;    // cudaStream_t
struct cublasContext;  // cublasHandle_t

namespace tessera {

// Device memory in bytes: the device's totals (cudaMemGetInfo) and what this backend holds.
struct VramUsage {
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int64_t weights_bytes = 0;    // uploaded weights (shared uploads counted once)
  int64_t kv_cache_bytes = 0;
  int64_t workspace_bytes = 0;  // activation buffers, metadata and GEMM scratch
};

// Number of visible CUDA devices; 0 when there is no device or no usable driver.
int CudaDeviceCount();

class CudaBackend final : public Backend {
 public:
  // Opens device `device` (cudaSetDevice), its stream and cuBLAS handle. Errors name the device
  // and say why (no device, bad index, driver too old).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override;  // "cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB)"
  int device() const { return device_; }

  absl::StatusOr<VramUsage> Vram() const;
  // KV cache bytes that fit in `fraction` (0..1] of the device memory still free now, after
  // weights and workspace: what a worker passes as EngineOptions::kv_budget_bytes.
  absl::StatusOr<int64_t> KvBudgetFromFreeVram(double fraction) const;
  // Device-to-device copy bandwidth (bytes read + bytes written per second) of a large
  // cudaMemcpy, best of a few: the decode roofline's denominator.
  absl::StatusOr<double> MeasureCopyBandwidth(int64_t bytes = int64_t{1} << 30);
  // Waits for all work queued on the backend's stream (for timing).
  absl::Status Synchronize();
  // MatMuls of up to this many tokens take the fused matvec kernels, larger ones the fp16
  // GEMM path (1..kMaxFusedTokens; default kDefaultMaxFusedTokens). For benchmarks comparing
  // the two paths.
  void set_max_fused_tokens(int n);
  int max_fused_tokens() const { return max_fused_tokens_; }

  absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const QuantMatrix& host) override;
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t n_floats) override;
  absl::Status AllocateKvCache(const KvLayout& layout) override;
  absl::Status CopyToHost(const float* device, int64_t n_floats, float* host) override;
  absl::Status CopyToDevice(const float* host, int64_t n_floats, float* device) override;

  absl::Status Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                     float* out) override;
  absl::Status MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
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
  struct DeviceBlock;  // one cudaMalloc, freed (and un-accounted) when the last user goes
  struct Scratch {     // a growable device buffer for per-call metadata or GEMM tiles
    std::shared_ptr<DeviceBlock> block;
    int64_t bytes = 0;
  };

  explicit CudaBackend(int device);
  absl::Status Init();
  absl::Status Activate() const;  // cudaSetDevice(device_)
  absl::StatusOr<std::shared_ptr<DeviceBlock>> Malloc(int64_t bytes, int64_t* category);
  absl::StatusOr<void*> EnsureScratch(Scratch* s, int64_t bytes);
  // Uploads `n` host values to `s` unless the last upload had the same contents.
  absl::StatusOr<void*> Upload(Scratch* s, std::vector<uint8_t>* last, const void* host,
                               int64_t bytes);
  absl::Status GemmF16(const QuantMatrix& w, const float* x, int64_t n_tokens, float* y);

  const int device_;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  std::string device_name_;
  int sm_ = 0;
  int sm_count_ = 0;  // multiprocessors
  int max_fused_tokens_;
  int64_t total_bytes_ = 0;

  // Accounting (bytes), shared with the DeviceBlocks that decrement it when freed.
  std::shared_ptr<int64_t> weights_bytes_ = std::make_shared<int64_t>(0);
  std::shared_ptr<int64_t> kv_bytes_ = std::make_shared<int64_t>(0);
  std::shared_ptr<int64_t> workspace_bytes_ = std::make_shared<int64_t>(0);

  // Uploaded weights by (host data, type, rows, cols, row_bytes), to share tied tensors.
  std::map<std::tuple<const void*, uint32_t, int64_t, int64_t, int64_t>,
           std::weak_ptr<DeviceBlock>> uploads_;

  KvLayout kv_layout_;
  std::shared_ptr<DeviceBlock> kv_;

  Scratch ids_, rows_, positions_, freqs_, slots_, attn_meta_, attn_partials_, gemm_w_, gemm_x_;
  std::vector<uint8_t> last_positions_, last_freqs_, last_slots_, last_attn_meta_;
};

// CudaBackend::Create as a plain Backend (what worker/backend_factory.h hands out).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_
