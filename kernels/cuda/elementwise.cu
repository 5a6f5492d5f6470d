// The small memory-bound ops of the forward pass (kernels/cuda/launch.h): RMSNorm, RoPE,
// SwiGLU, residual add and row gather. Same formulas as kernels/cpu/cpu_backend.cc.
#include "kernels/cuda/launch.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// One block per row: sum of squares by a block-wide tree (float partials combined in double
// at the end, as the CPU sums in double), then the scaled row.
__global__ void RmsNormKernel(const float* x, const float* __restrict__ gain, int64_t dim,
                              float eps, float* y) {
  __shared__ double partial[kThreads];
  const float* xr = x + int64_t{blockIdx.x} * dim;
  float* yr = y + int64_t{blockIdx.x} * dim;
  double sum_sq = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum_sq += static_cast<double>(xr[i]) * xr[i];
  partial[threadIdx.x] = sum_sq;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  const float scale = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(dim) + eps));
  // Every thread read `partial[0]` above before any writes y (which may alias x): the loop
  // below only touches this row, whose sum is already complete.
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) yr[i] = xr[i] * scale * gain[i];
}

// One thread per (token, rotated pair), looping over heads.
__global__ void RopeKernel(float* x, int64_t n_tokens, int n_heads, int head_dim, int half,
                           const int32_t* __restrict__ positions,
                           const float* __restrict__ inv_freq) {
  const int64_t idx = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (idx >= n_tokens * half) return;
  const int64_t t = idx / half;
  const int i = static_cast<int>(idx % half);
  const double angle = static_cast<double>(positions[t]) * inv_freq[i];
  double s, c;
  sincos(angle, &s, &c);
  const float cf = static_cast<float>(c), sf = static_cast<float>(s);
  for (int h = 0; h < n_heads; ++h) {
    float* p = x + (t * n_heads + h) * head_dim + 2 * i;
    const float x0 = p[0], x1 = p[1];
    p[0] = x0 * cf - x1 * sf;
    p[1] = x0 * sf + x1 * cf;
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i < n) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void GatherRowsKernel(const float* __restrict__ src, const int32_t* __restrict__ rows,
                                 int64_t dim, float* __restrict__ dst) {
  const int64_t i = blockIdx.y;
  const int64_t c = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (c < dim) dst[i * dim + c] = src[int64_t{rows[i]} * dim + c];
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* gain, int64_t n_tokens, int64_t dim,
                          float eps, float* y, cudaStream_t stream) {
  if (n_tokens <= 0) return cudaSuccess;
  if (n_tokens > 0x7fffffff) return cudaErrorInvalidValue;
  RmsNormKernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream>>>(x, gain, dim, eps, y);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int64_t n_tokens, int n_heads, int head_dim, int rope_dims,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  const int half = rope_dims / 2;
  if (n_tokens <= 0 || half <= 0) return cudaSuccess;
  RopeKernel<<<Blocks(n_tokens * half), kThreads, 0, stream>>>(x, n_tokens, n_heads, head_dim,
                                                               half, positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SwiGluKernel<<<Blocks(n), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<Blocks(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int64_t n_rows, int64_t dim,
                             float* dst, cudaStream_t stream) {
  for (int64_t i = 0; i < n_rows; i += 65535) {
    const int64_t chunk = n_rows - i < 65535 ? n_rows - i : 65535;
    const dim3 grid(Blocks(dim), static_cast<unsigned>(chunk));
    GatherRowsKernel<<<grid, kThreads, 0, stream>>>(src, rows + i, dim, dst + i * dim);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace tessera::cuda
