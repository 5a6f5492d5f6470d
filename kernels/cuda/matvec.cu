// Fused dequantize x matrix-vector product for decode and small batches (kernels/cuda/launch.h).
//
// One warp per output row, four rows per 128-thread block. Lane l walks groups l, l + 32, ...
// of 16 weights (block_decode.cuh), so a warp's loads cover consecutive blocks of the row. For
// every group the lane takes the dot product of the 16 integer codes with each token's x and
// applies the group's scale (and offset * sum(x)) once: sum_i (s q_i + o) x_i =
// s sum_i q_i x_i + o sum_i x_i, equal to the reference's per-weight products up to float
// rounding. kTokens (1, 2, 4, 8 or 16) x rows share each decoded group, so a batch of up to 16
// tokens streams the weights once. Lane partial sums are combined by a fixed shuffle tree.
#include "kernels/cuda/block_decode.cuh"
#include "kernels/cuda/launch.h"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

template <class F, int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    FusedMatVecKernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols,
                      int64_t row_bytes, const float* __restrict__ x, int n_tokens,
                      float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const uint8_t* row = w + r * row_bytes;
  const int64_t n_groups = cols / 16;
  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;

  for (int64_t g = lane; g < n_groups; g += 32) {
    Group16 grp;
    F::Decode(row, g, &grp);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < n_tokens) {
        const float4* xv = reinterpret_cast<const float4*>(x + t * cols + g * 16);
        float dot = 0.0f, sum = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float4 v = __ldg(xv + k);
          dot = fmaf(grp.q[4 * k], v.x, dot);
          dot = fmaf(grp.q[4 * k + 1], v.y, dot);
          dot = fmaf(grp.q[4 * k + 2], v.z, dot);
          dot = fmaf(grp.q[4 * k + 3], v.w, dot);
          if constexpr (F::kHasOffset) sum += (v.x + v.y) + (v.z + v.w);
        }
        acc[t] = fmaf(grp.scale, dot, acc[t]);
        if constexpr (F::kHasOffset) acc[t] = fmaf(grp.offset, sum, acc[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int width = 16; width > 0; width /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], width);
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < n_tokens) y[t * rows + r] = acc[t];
    }
  }
}

template <class F, int kTokens>
void Launch(const void* w, int64_t rows, int64_t cols, int64_t row_bytes, const float* x,
            int n_tokens, float* y, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  FusedMatVecKernel<F, kTokens><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      static_cast<const uint8_t*>(w), rows, cols, row_bytes, x, n_tokens, y);
}

}  // namespace

bool FusedMatVecSupports(uint32_t type, int64_t cols) {
  return cols > 0 && cols % 16 == 0 && DispatchFormat(type, [](auto) {});
}

cudaError_t LaunchFusedMatVec(uint32_t type, const void* w, int64_t rows, int64_t cols,
                              int64_t row_bytes, const float* x, int n_tokens, float* y,
                              cudaStream_t stream) {
  if (!FusedMatVecSupports(type, cols) || n_tokens < 1 || n_tokens > kMaxFusedTokens ||
      rows < 1) {
    return cudaErrorInvalidValue;
  }
  DispatchFormat(type, [&](auto format) {
    using F = decltype(format);
    if (n_tokens == 1) {
      Launch<F, 1>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 2) {
      Launch<F, 2>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 4) {
      Launch<F, 4>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 8) {
      Launch<F, 8>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else {
      Launch<F, 16>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    }
  });
  return cudaGetLastError();
}

}  // namespace tessera::cuda
