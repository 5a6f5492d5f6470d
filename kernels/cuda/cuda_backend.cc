#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda/cublas_loader.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"
#include "kernels/quant/types.h"
#include "kernels/status_macros.h"

namespace tessera {

// One cudaMalloc. Freed, and subtracted from its category's count, when the last owner drops
// it; the backend outlives every owner (kernels/backend.h), so the counter is still there.
struct CudaBackend::DeviceBlock {
  void* ptr = nullptr;
  int64_t bytes = 0;
  int device = 0;
  std::shared_ptr<int64_t> category;
  ~DeviceBlock() {
    if (ptr == nullptr) return;
    int current = 0;
    const bool switch_device = cudaGetDevice(&current) == cudaSuccess && current != device;
    if (switch_device) cudaSetDevice(device);
    cudaFree(ptr);  // a failure here has no one to report to; the context is going anyway
    if (switch_device) cudaSetDevice(current);
    *category -= bytes;
  }
};

namespace {

// Bytes of one row of `cols` elements stored compactly, or an error naming the format.
absl::StatusOr<int64_t> CompactRowBytes(const QuantMatrix& m) {
  const QuantTraits* traits = FindQuantTraits(m.type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight type ", GgmlTypeName(m.type), " is not supported"));
  }
  return RowBytes(*traits, m.cols);
}

class CudaWeight final : public Weight {
 public:
  CudaWeight(const QuantMatrix& m, std::shared_ptr<void> memory, int64_t bytes)
      : m_(m), memory_(std::move(memory)), bytes_(bytes) {}
  const QuantMatrix& matrix() const override { return m_; }
  int64_t device_bytes() const override { return bytes_; }

 private:
  QuantMatrix m_;
  std::shared_ptr<void> memory_;  // keeps the (possibly shared) upload alive
  int64_t bytes_;
};

class CudaBuffer final : public DeviceBuffer {
 public:
  CudaBuffer(std::shared_ptr<void> memory, float* data, int64_t n)
      : memory_(std::move(memory)), data_(data), n_(n) {}
  float* data() override { return data_; }
  int64_t n_floats() const override { return n_; }

 private:
  std::shared_ptr<void> memory_;
  float* data_;
  int64_t n_;
};

bool SameRope(const RopeParams& a, const RopeParams& b) {
  return a.head_dim == b.head_dim && a.rope_dims == b.rope_dims && a.freq_base == b.freq_base &&
         a.scaling_factor == b.scaling_factor && a.low_freq_factor == b.low_freq_factor &&
         a.high_freq_factor == b.high_freq_factor && a.original_context == b.original_context &&
         a.freq_factors == b.freq_factors;
}

// fp16 weight tile of the GEMM path: at most this many halves (32 MiB) per chunk of rows.
constexpr int64_t kGemmTileHalves = int64_t{16} << 20;

}  // namespace

CudaBackend::CudaBackend(int device)
    : device_(device), max_fused_tokens_(cuda::kDefaultMaxFusedTokens) {}

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error for later callers
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(device);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda:", device, ": no CUDA device is usable (",
        e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0", ")"));
  }
  if (device < 0 || device >= n) {
    return absl::InvalidArgumentError(absl::StrCat("cuda:", device, ": there are ", n,
                                                   " CUDA devices (cuda:0..cuda:", n - 1, ")"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend(device));
  TESSERA_RETURN_IF_ERROR(b->Init());
  return b;
}

absl::Status CudaBackend::Init() {
  TESSERA_RETURN_IF_ERROR(Activate());
  cudaDeviceProp prop;
  TESSERA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device_));
  device_name_ = prop.name;
  sm_ = prop.major * 10 + prop.minor;
  sm_count_ = prop.multiProcessorCount;
  total_bytes_ = static_cast<int64_t>(prop.totalGlobalMem);
  cudaStream_t stream = nullptr;
  TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = stream;
  TESSERA_ASSIGN_OR_RETURN(const cuda::CublasApi* cublas, cuda::Cublas());
  cublasHandle_t handle = nullptr;
  TESSERA_CUBLAS_RETURN_IF_ERROR(cublas->create(&handle));
  cublas_ = handle;
  TESSERA_CUBLAS_RETURN_IF_ERROR(cublas->set_stream(cublas_, stream_));
  return absl::OkStatus();
}

CudaBackend::~CudaBackend() {
  if (Activate().ok() && stream_ != nullptr) cudaStreamSynchronize(stream_);
  kv_.reset();
  for (Scratch* s : {&ids_, &rows_, &positions_, &freqs_, &slots_, &attn_meta_, &attn_partials_,
                     &gemm_w_, &gemm_x_}) {
    s->block.reset();
  }
  if (cublas_ != nullptr) (*cuda::Cublas())->destroy(cublas_);  // loaded: cublas_ exists
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const {
  return absl::StrFormat("cuda:%d (%s, sm_%d, %.1f GiB)", device_, device_name_, sm_,
                         static_cast<double>(total_bytes_) / (1 << 30));
}

absl::Status CudaBackend::Activate() const {
  TESSERA_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<CudaBackend::DeviceBlock>> CudaBackend::Malloc(
    int64_t bytes, int64_t* category) {
  auto block = std::make_shared<DeviceBlock>();
  block->device = device_;
  if (category == weights_bytes_.get()) {
    block->category = weights_bytes_;
  } else if (category == kv_bytes_.get()) {
    block->category = kv_bytes_;
  } else {
    block->category = workspace_bytes_;
  }
  if (bytes == 0) return block;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes));
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: cannot allocate %.1f MiB of device memory (%s); %.1f MiB free of %.1f MiB, this "
        "backend holds weights %.1f MiB, KV cache %.1f MiB, workspace %.1f MiB",
        name(), bytes / 1048576.0, cudaGetErrorString(e), free_bytes / 1048576.0,
        total / 1048576.0, *weights_bytes_ / 1048576.0, *kv_bytes_ / 1048576.0,
        *workspace_bytes_ / 1048576.0));
  }
  block->ptr = p;
  block->bytes = bytes;
  *block->category += bytes;
  return block;
}

absl::StatusOr<void*> CudaBackend::EnsureScratch(Scratch* s, int64_t bytes) {
  if (s->block != nullptr && s->bytes >= bytes) return s->block->ptr;
  // Grow by at least 2x so a slowly growing batch does not reallocate every step.
  const int64_t want = std::max<int64_t>({bytes, 2 * s->bytes, 256});
  s->block.reset();  // free first: the stream is in order, cudaFree waits for users
  s->bytes = 0;
  TESSERA_ASSIGN_OR_RETURN(s->block, Malloc(want, workspace_bytes_.get()));
  s->bytes = want;
  return s->block->ptr;
}

absl::StatusOr<void*> CudaBackend::Upload(Scratch* s, std::vector<uint8_t>* last,
                                          const void* host, int64_t bytes) {
  const auto* h = static_cast<const uint8_t*>(host);
  if (s->block != nullptr && last->size() == static_cast<size_t>(bytes) &&
      (bytes == 0 || std::memcmp(last->data(), h, static_cast<size_t>(bytes)) == 0)) {
    return s->block->ptr;  // the same metadata as the previous call (e.g. the next layer)
  }
  TESSERA_ASSIGN_OR_RETURN(void* d, EnsureScratch(s, bytes));
  if (bytes > 0) {
    TESSERA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(d, h, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream_));
  }
  last->assign(h, h + bytes);
  return d;
}

absl::StatusOr<VramUsage> CudaBackend::Vram() const {
  TESSERA_RETURN_IF_ERROR(Activate());
  size_t free_bytes = 0, total = 0;
  TESSERA_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total));
  VramUsage u;
  u.total_bytes = static_cast<int64_t>(total);
  u.free_bytes = static_cast<int64_t>(free_bytes);
  u.weights_bytes = *weights_bytes_;
  u.kv_cache_bytes = *kv_bytes_;
  u.workspace_bytes = *workspace_bytes_;
  return u;
}

absl::StatusOr<int64_t> CudaBackend::KvBudgetFromFreeVram(double fraction) const {
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache fraction of free VRAM must be in (0, 1], got ", fraction));
  }
  TESSERA_ASSIGN_OR_RETURN(VramUsage u, Vram());
  return static_cast<int64_t>(static_cast<double>(u.free_bytes) * fraction);
}

absl::StatusOr<double> CudaBackend::MeasureCopyBandwidth(int64_t bytes) {
  TESSERA_RETURN_IF_ERROR(Activate());
  if (bytes < (1 << 20)) return absl::InvalidArgumentError("bandwidth test needs >= 1 MiB");
  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<DeviceBlock> src, Malloc(bytes, workspace_bytes_.get()));
  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<DeviceBlock> dst, Malloc(bytes, workspace_bytes_.get()));
  TESSERA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(src->ptr, 1, static_cast<size_t>(bytes), stream_));
  cudaEvent_t start = nullptr, stop = nullptr;
  TESSERA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  const cudaError_t e = cudaEventCreate(&stop);
  if (e != cudaSuccess) cudaEventDestroy(start);
  TESSERA_CUDA_RETURN_IF_ERROR(e);
  auto run = [&]() -> absl::StatusOr<double> {
    double best_s = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 6; ++rep) {  // the first is a warm-up
      TESSERA_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream_));
      TESSERA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst->ptr, src->ptr, static_cast<size_t>(bytes),
                                                   cudaMemcpyDeviceToDevice, stream_));
      TESSERA_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream_));
      TESSERA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
      float ms = 0;
      TESSERA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
      if (rep > 0) best_s = std::min(best_s, ms / 1e3);
    }
    return 2.0 * static_cast<double>(bytes) / best_s;  // each byte is read once, written once
  };
  absl::StatusOr<double> result = run();
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return result;
}

void CudaBackend::set_max_fused_tokens(int n) {
  max_fused_tokens_ = std::clamp(n, 1, cuda::kMaxFusedTokens);
}

absl::Status CudaBackend::Synchronize() {
  TESSERA_RETURN_IF_ERROR(Activate());
  TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Weight>> CudaBackend::LoadWeight(const QuantMatrix& host) {
  TESSERA_ASSIGN_OR_RETURN(const int64_t row_bytes, CompactRowBytes(host));
  if (host.row_bytes < row_bytes || host.rows < 1 || host.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("malformed ", GgmlTypeName(host.type),
                                                   " weight: rows=", host.rows, " cols=",
                                                   host.cols, " row_bytes=", host.row_bytes));
  }
  if (host.layout != WeightLayout::kGguf) {
    return absl::InvalidArgumentError(
        "the CUDA backend takes weights in the GGUF layout (this one is the CPU's interleaved)");
  }
  if (!cuda::DequantizeSupports(static_cast<uint32_t>(host.type))) {
    return absl::UnimplementedError(absl::StrCat("the CUDA backend has no kernels for ",
                                                 GgmlTypeName(host.type), " weights"));
  }
  TESSERA_RETURN_IF_ERROR(Activate());
  QuantMatrix dev = host;
  dev.row_bytes = row_bytes;
  const auto key = std::make_tuple(host.data, static_cast<uint32_t>(host.type), host.rows,
                                   host.cols, host.row_bytes);
  std::shared_ptr<DeviceBlock> block;
  if (auto it = uploads_.find(key); it != uploads_.end()) block = it->second.lock();
  if (block == nullptr) {
    TESSERA_ASSIGN_OR_RETURN(block, Malloc(row_bytes * host.rows, weights_bytes_.get()));
    // Row by row from the caller's memory (a strided 2-D copy when a tensor-parallel slice
    // leaves gaps), without staging the tensor in host memory first.
    TESSERA_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(
        block->ptr, static_cast<size_t>(row_bytes), host.data,
        static_cast<size_t>(host.row_bytes), static_cast<size_t>(row_bytes),
        static_cast<size_t>(host.rows), cudaMemcpyHostToDevice, stream_));
    // The host memory may be unmapped after this returns.
    TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    uploads_[key] = block;
  }
  dev.data = block->ptr;
  const int64_t bytes = row_bytes * host.rows;
  return std::make_unique<CudaWeight>(dev, std::shared_ptr<void>(block, block->ptr), bytes);
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaBackend::Allocate(int64_t n_floats) {
  if (n_floats < 0) return absl::InvalidArgumentError("negative buffer size");
  TESSERA_RETURN_IF_ERROR(Activate());
  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<DeviceBlock> block,
                           Malloc(n_floats * int64_t{sizeof(float)}, workspace_bytes_.get()));
  float* data = static_cast<float*>(block->ptr);
  return std::make_unique<CudaBuffer>(std::shared_ptr<void>(block, block->ptr), data, n_floats);
}

absl::Status CudaBackend::AllocateKvCache(const KvLayout& layout) {
  if (layout.n_layers <= 0 || layout.n_kv_heads <= 0 || layout.head_dim <= 0 ||
      layout.block_tokens <= 0 || layout.n_blocks <= 0) {
    return absl::InvalidArgumentError("KV cache layout has a non-positive dimension");
  }
  if (layout.type != KvType::kF32) {
    return absl::UnimplementedError(absl::StrCat("the CUDA backend keeps its KV cache in f32, not ",
                                                 KvTypeName(layout.type)));
  }
  if (layout.head_dim > cuda::kMaxHeadDim) {
    return absl::UnimplementedError(absl::StrCat("the CUDA attention kernel supports head_dim <= ",
                                                 cuda::kMaxHeadDim, ", got ", layout.head_dim));
  }
  TESSERA_RETURN_IF_ERROR(Activate());
  kv_.reset();
  kv_layout_ = KvLayout();
  TESSERA_ASSIGN_OR_RETURN(kv_, Malloc(layout.bytes(), kv_bytes_.get()));
  TESSERA_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(kv_->ptr, 0, static_cast<size_t>(layout.bytes()), stream_));
  kv_layout_ = layout;
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(const float* device, int64_t n, float* host) {
  TESSERA_RETURN_IF_ERROR(Activate());
  if (n <= 0) return absl::OkStatus();
  TESSERA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, device, static_cast<size_t>(n) * sizeof(float),
                                               cudaMemcpyDeviceToHost, stream_));
  TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToDevice(const float* host, int64_t n, float* device) {
  TESSERA_RETURN_IF_ERROR(Activate());
  if (n <= 0) return absl::OkStatus();
  TESSERA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device, host, static_cast<size_t>(n) * sizeof(float),
                                               cudaMemcpyHostToDevice, stream_));
  // Pageable source: the call returns once `host` has been read, so the caller may reuse it.
  return absl::OkStatus();
}

absl::Status CudaBackend::Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                                float* out) {
  const QuantMatrix& m = table.matrix();
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= m.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", ids[t], " is outside the vocabulary (", m.rows, " tokens)"));
    }
  }
  if (n_tokens <= 0) return absl::OkStatus();
  TESSERA_RETURN_IF_ERROR(Activate());
  std::vector<uint8_t> unused;
  TESSERA_ASSIGN_OR_RETURN(void* d_ids, Upload(&ids_, &unused, ids, n_tokens * 4));
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchDequantizeRowsF32(
      static_cast<uint32_t>(m.type), m.data, m.cols, m.row_bytes,
      static_cast<const int32_t*>(d_ids), n_tokens, out, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const QuantMatrix& m = w.matrix();
  if (n_tokens <= 0) return absl::OkStatus();
  TESSERA_RETURN_IF_ERROR(Activate());
  const auto type = static_cast<uint32_t>(m.type);
  if (n_tokens <= max_fused_tokens_ && cuda::FusedMatVecSupports(type, m.cols)) {
    TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchFusedMatVec(type, m.data, m.rows, m.cols,
                                                         m.row_bytes, x,
                                                         static_cast<int>(n_tokens), y, stream_));
    return absl::OkStatus();
  }
  return GemmF16(m, x, n_tokens, y);
}

absl::Status CudaBackend::GemmF16(const QuantMatrix& m, const float* x, int64_t n_tokens,
                                  float* y) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (m.rows > kIntMax || m.cols > kIntMax || n_tokens > kIntMax) {
    return absl::InvalidArgumentError(absl::StrCat("matmul of ", m.rows, " x ", m.cols, " by ",
                                                   n_tokens, " tokens exceeds cuBLAS's int sizes"));
  }
  const int64_t chunk_rows = std::clamp<int64_t>(kGemmTileHalves / m.cols, 1, m.rows);
  TESSERA_ASSIGN_OR_RETURN(void* w16, EnsureScratch(&gemm_w_, chunk_rows * m.cols * 2));
  TESSERA_ASSIGN_OR_RETURN(void* x16, EnsureScratch(&gemm_x_, n_tokens * m.cols * 2));
  TESSERA_CUDA_RETURN_IF_ERROR(
      cuda::LaunchFloatToHalf(x, n_tokens * m.cols, static_cast<uint16_t*>(x16), stream_));
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t r0 = 0; r0 < m.rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, m.rows - r0);
    TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchDequantizeRowsF16(
        static_cast<uint32_t>(m.type), m.data, m.cols, m.row_bytes, r0, n,
        static_cast<uint16_t*>(w16), stream_));
    // Column-major view: Y^T[r0:r0+n, :] (n x T, ld rows) = W16^T (n x cols) * X^T (cols x T).
    TESSERA_CUBLAS_RETURN_IF_ERROR((*cuda::Cublas())->gemm_ex(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(n_tokens),
        static_cast<int>(m.cols), &alpha, w16, CUDA_R_16F, static_cast<int>(m.cols), x16,
        CUDA_R_16F, static_cast<int>(m.cols), &beta, y + r0, CUDA_R_32F,
        static_cast<int>(m.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::RmsNorm(const float* x, const Weight& weight, int64_t n_tokens,
                                  float eps, float* y) {
  const QuantMatrix& m = weight.matrix();
  if (m.type != GgmlType::kF32) return absl::InvalidArgumentError("RMSNorm weight must be F32");
  TESSERA_RETURN_IF_ERROR(Activate());
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchRmsNorm(x, static_cast<const float*>(m.data), n_tokens,
                                                   m.cols * m.rows, eps, y, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Rope(float* x, int64_t n_tokens, int n_heads, const int32_t* positions,
                               const RopeParams& params) {
  TESSERA_RETURN_IF_ERROR(CheckRopeParams(params));
  if (n_tokens <= 0) return absl::OkStatus();
  TESSERA_RETURN_IF_ERROR(Activate());
  const std::vector<float> freqs = RopeFrequencies(params);
  TESSERA_ASSIGN_OR_RETURN(void* d_freqs, Upload(&freqs_, &last_freqs_, freqs.data(),
                                                 static_cast<int64_t>(freqs.size()) * 4));
  TESSERA_ASSIGN_OR_RETURN(void* d_pos,
                           Upload(&positions_, &last_positions_, positions, n_tokens * 4));
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchRope(x, n_tokens, n_heads, params.head_dim,
                                                params.rope_dims,
                                                static_cast<const int32_t*>(d_pos),
                                                static_cast<const float*>(d_freqs), stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  TESSERA_RETURN_IF_ERROR(Activate());
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchSwiGlu(gate, up, n, out, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::GatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                                     int64_t dim, float* dst) {
  if (n_rows <= 0) return absl::OkStatus();
  for (int64_t i = 0; i < n_rows; ++i) {
    if (rows[i] < 0) return absl::InvalidArgumentError(absl::StrCat("negative row ", rows[i]));
  }
  TESSERA_RETURN_IF_ERROR(Activate());
  std::vector<uint8_t> unused;
  TESSERA_ASSIGN_OR_RETURN(void* d_rows, Upload(&rows_, &unused, rows, n_rows * 4));
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchGatherRows(
      src, static_cast<const int32_t*>(d_rows), n_rows, dim, dst, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Add(float* x, const float* y, int64_t n) {
  TESSERA_RETURN_IF_ERROR(Activate());
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchAdd(x, y, n, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Attention(int layer, const float* q, const float* k, const float* v,
                                    int n_heads, const AttentionBatch& batch, float* out) {
  const KvLayout& L = kv_layout_;
  if (kv_ == nullptr) return absl::FailedPreconditionError("KV cache not allocated");
  if (layer < 0 || layer >= L.n_layers || n_heads % L.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: layer ", layer, " or heads ",
                                                   n_heads, " do not match the KV cache"));
  }
  const int64_t n_tokens = static_cast<int64_t>(batch.position.size());
  if (n_tokens == 0) return absl::OkStatus();
  if (batch.seq_of_token.size() != batch.position.size() ||
      batch.slot_of_token.size() != batch.position.size()) {
    return absl::InvalidArgumentError("attention: batch vectors differ in length");
  }
  const int64_t n_slots = L.n_blocks * L.block_tokens;
  int max_ctx = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t slot = batch.slot_of_token[t];
    if (slot < 0 || slot >= n_slots) {
      return absl::InvalidArgumentError(absl::StrCat("KV slot ", slot, " out of range"));
    }
    const int32_t seq = batch.seq_of_token[t];
    if (seq < 0 || seq >= static_cast<int32_t>(batch.block_table.size()) ||
        batch.position[t] < 0 ||
        static_cast<int64_t>(batch.block_table[seq].size()) * L.block_tokens <=
            batch.position[t]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attention: token ", t, " at position ", batch.position[t],
          " is not covered by its sequence's block table"));
    }
    max_ctx = std::max(max_ctx, batch.position[t] + 1);
  }
  for (const std::vector<int32_t>& table : batch.block_table) {
    for (const int32_t b : table) {
      if (b < 0 || b >= L.n_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("attention: block id ", b, " outside the KV cache (", L.n_blocks,
                         " blocks)"));
      }
    }
  }
  TESSERA_RETURN_IF_ERROR(Activate());
  // int32 metadata: positions (n), seq_of_token (n), table_begin (n_seqs), tables (...).
  std::vector<int32_t> meta;
  meta.reserve(static_cast<size_t>(2 * n_tokens) + batch.block_table.size() * 2);
  meta.insert(meta.end(), batch.position.begin(), batch.position.end());
  meta.insert(meta.end(), batch.seq_of_token.begin(), batch.seq_of_token.end());
  int32_t offset = 0;
  for (const std::vector<int32_t>& table : batch.block_table) {
    meta.push_back(offset);
    offset += static_cast<int32_t>(table.size());
  }
  for (const std::vector<int32_t>& table : batch.block_table) {
    meta.insert(meta.end(), table.begin(), table.end());
  }
  TESSERA_ASSIGN_OR_RETURN(void* d_slots, Upload(&slots_, &last_slots_, batch.slot_of_token.data(),
                                                 n_tokens * 8));
  TESSERA_ASSIGN_OR_RETURN(void* d_meta, Upload(&attn_meta_, &last_attn_meta_, meta.data(),
                                                static_cast<int64_t>(meta.size()) * 4));
  const auto* m32 = static_cast<const int32_t*>(d_meta);
  const int64_t n_seqs = static_cast<int64_t>(batch.block_table.size());

  const int64_t per_kv = n_slots * L.n_kv_heads * L.head_dim;  // floats of K (or V) per layer
  float* layer_base = static_cast<float*>(kv_->ptr) + int64_t{layer} * 2 * per_kv;
  cuda::AttentionArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.k_cache = layer_base;
  a.v_cache = layer_base + per_kv;
  a.out = out;
  a.slot_of_token = static_cast<const int64_t*>(d_slots);
  a.position = m32;
  a.seq_of_token = m32 + n_tokens;
  a.table_begin = m32 + 2 * n_tokens;
  a.tables = m32 + 2 * n_tokens + n_seqs;
  a.n_tokens = n_tokens;
  a.n_heads = n_heads;
  a.n_kv_heads = L.n_kv_heads;
  a.head_dim = L.head_dim;
  a.block_tokens = L.block_tokens;
  const cuda::AttentionPlan plan =
      cuda::PlanAttention(n_tokens, n_heads, L.n_kv_heads, L.head_dim, max_ctx, sm_count_);
  if (plan.workspace_floats > 0) {
    TESSERA_ASSIGN_OR_RETURN(void* partials,
                             EnsureScratch(&attn_partials_, plan.workspace_floats * 4));
    a.partials = static_cast<float*>(partials);
    a.n_chunks = plan.n_chunks;
    a.chunk_len = plan.chunk_len;
  }
  TESSERA_CUDA_RETURN_IF_ERROR(cuda::LaunchAttention(a, stream_));
  return absl::OkStatus();
}

}  // namespace tessera
