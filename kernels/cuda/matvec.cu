// Fused dequantize x matrix-vector product for decode and small batches (kernels/cuda/launch.h).
//
// A 128-thread block takes kRows consecutive rows; its four warps split each row's columns in
// segments of 512 weights (32 groups of 16, whole blocks of every format): warp w takes
// segments w, w + 4, ... For each segment the warp first copies the kRows rows' bytes of it
// into its own shared memory with the widest coalesced loads the row alignment allows (16
// bytes for most shapes; GGUF blocks of 18 or 34 bytes would otherwise be read two bytes at a
// time), then lane l decodes group l of each row from there (block_decode.cuh) and takes its
// dot products with each token's x, loaded once and used for all kRows rows. For every group
// the lane applies the group's scale (and offset * sum(x)) once:
//   sum_i (s q_i + o) x_i = s sum_i q_i x_i + o sum_i x_i,
// equal to the reference's per-weight products up to float rounding. kTokens (1, 2, 4, 8 or
// 16) x kRows share each decoded group, so a batch of up to 16 tokens streams the weights once.
// Lane sums are combined by a fixed shuffle tree, the four warps' sums in warp order.
#include <cuda_pipeline.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/block_decode.cuh"
#include "kernels/cuda/launch.h"

namespace tessera::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kSegmentWeights = 512;  // 32 lanes x one group of 16

// Whether the staging copies run ahead by one segment (cp.async into a second buffer while the
// lanes decode the current one): on unless TESSERA_CUDA_MATVEC_PIPELINE=0 (a switch for
// benchmarks comparing the two).
bool PipelineEnabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("TESSERA_CUDA_MATVEC_PIPELINE");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled;
}

// Copies `bytes` (a multiple of kWidth) from src to dst with kWidth-byte loads spread over the
// warp's lanes.
template <int kWidth>
__device__ __forceinline__ void WarpCopy(const uint8_t* __restrict__ src, uint8_t* dst, int bytes,
                                         int lane) {
  using Word = typename std::conditional<
      kWidth == 16, uint4,
      typename std::conditional<kWidth == 8, uint2,
                                typename std::conditional<kWidth == 4, uint32_t,
                                                          uint16_t>::type>::type>::type;
  const Word* s = reinterpret_cast<const Word*>(src);
  Word* d = reinterpret_cast<Word*>(dst);
  for (int i = lane; i < bytes / kWidth; i += 32) d[i] = __ldg(s + i);
}

// The same copy, with kAsync as asynchronous shared-memory copies (cp.async, which has forms
// for 4, 8 and 16 bytes; two-byte copies stay synchronous): they complete at the lane's next
// __pipeline_wait_prior.
template <int kWidth, bool kAsync>
__device__ __forceinline__ void WarpCopyTo(const uint8_t* __restrict__ src, uint8_t* dst,
                                           int bytes, int lane) {
  if constexpr (kAsync && kWidth >= 4) {
    for (int i = lane; i < bytes / kWidth; i += 32) {
      __pipeline_memcpy_async(dst + i * kWidth, src + i * kWidth, kWidth);
    }
  } else {
    WarpCopy<kWidth>(src, dst, bytes, lane);
  }
}

template <class F, int kTokens, int kRows, bool kPipelined>
__global__ void __launch_bounds__(kWarps * 32)
    FusedMatVecKernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols,
                      int64_t row_bytes, int copy_width, const float* __restrict__ x,
                      int n_tokens, float* __restrict__ y) {
  constexpr int kSegmentBytes = kSegmentWeights / F::kBlockElems * F::kBlockBytes;
  constexpr int kBuffers = kPipelined ? 2 : 1;
  __shared__ __align__(16) uint8_t staged[kBuffers][kWarps][kRows][kSegmentBytes];
  __shared__ float partial[kWarps][kTokens][kRows];

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t r0 = int64_t{blockIdx.x} * kRows;
  const int64_t n_groups = cols / 16;
  const int64_t n_segments = (cols + kSegmentWeights - 1) / kSegmentWeights;

  float acc[kTokens][kRows];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0.0f;
  }

  // Copies segment `seg` of the kRows rows (whole blocks; the last segment may be shorter) into
  // buffer `buf`.
  auto stage = [&](int64_t seg, int buf) {
    const int64_t g0 = seg * (kSegmentWeights / 16);
    const int seg_groups = static_cast<int>(n_groups - g0 < 32 ? n_groups - g0 : 32);
    const int seg_bytes = seg_groups * 16 / F::kBlockElems * F::kBlockBytes;
    const int64_t offset = g0 * 16 / F::kBlockElems * F::kBlockBytes;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      // Rows past the end re-read the last row; their sums are never stored.
      const int64_t row = r0 + r < rows ? r0 + r : rows - 1;
      const uint8_t* src = w + row * row_bytes + offset;
      uint8_t* dst = staged[buf][warp][r];
      switch (copy_width) {  // warp-uniform
        case 16: WarpCopyTo<16, kPipelined>(src, dst, seg_bytes, lane); break;
        case 8: WarpCopyTo<8, kPipelined>(src, dst, seg_bytes, lane); break;
        case 4: WarpCopyTo<4, kPipelined>(src, dst, seg_bytes, lane); break;
        default: WarpCopyTo<2, kPipelined>(src, dst, seg_bytes, lane); break;
      }
    }
  };

  int buf = 0;
  if constexpr (kPipelined) {
    if (warp < n_segments) stage(warp, 0);
    __pipeline_commit();
  }
  for (int64_t seg = warp; seg < n_segments; seg += kWarps) {
    if constexpr (kPipelined) {
      // The next segment streams in while this one is decoded.
      if (seg + kWarps < n_segments) stage(seg + kWarps, buf ^ 1);
      __pipeline_commit();
      __pipeline_wait_prior(1);  // this lane's copies of the current segment have landed
    } else {
      stage(seg, 0);
    }
    __syncwarp();  // ... and every other lane's
    const int64_t g0 = seg * (kSegmentWeights / 16);
    const int seg_groups = static_cast<int>(n_groups - g0 < 32 ? n_groups - g0 : 32);
    if (lane < seg_groups) {
      Group16 grp[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) F::Decode(staged[buf][warp][r], lane, &grp[r]);
      const int64_t xcol = (g0 + lane) * 16;
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < n_tokens) {
          const float4* xv = reinterpret_cast<const float4*>(x + t * cols + xcol);
          float v[16];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float4 f = __ldg(xv + k);
            v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
          }
          float sum = 0.0f;
          if constexpr (F::kHasOffset) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              sum += (v[4 * k] + v[4 * k + 1]) + (v[4 * k + 2] + v[4 * k + 3]);
            }
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; ++i) dot = fmaf(grp[r].q[i], v[i], dot);
            acc[t][r] = fmaf(grp[r].scale, dot, acc[t][r]);
            if constexpr (F::kHasOffset) acc[t][r] = fmaf(grp[r].offset, sum, acc[t][r]);
          }
        }
      }
    }
    __syncwarp();  // every lane has decoded `buf` before it is staged into again
    if constexpr (kPipelined) buf ^= 1;
  }

#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int width = 16; width > 0; width /= 2) {
        acc[t][r] += __shfl_xor_sync(0xffffffffu, acc[t][r], width);
      }
      if (lane == 0) partial[warp][t][r] = acc[t][r];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kTokens * kRows; i += kWarps * 32) {
    const int t = i / kRows, r = i % kRows;
    if (t < n_tokens && r0 + r < rows) {
      float sum = partial[0][t][r];
#pragma unroll
      for (int k = 1; k < kWarps; ++k) sum += partial[k][t][r];
      y[t * rows + r0 + r] = sum;
    }
  }
}

// The widest of 16, 8, 4 or 2 bytes that divides every segment's start (row starts from a
// 256-byte aligned base, segments at multiples of their byte size) and length.
int CopyWidth(int64_t row_bytes, int segment_bytes, int last_segment_bytes) {
  for (int width : {16, 8, 4}) {
    if (row_bytes % width == 0 && segment_bytes % width == 0 && last_segment_bytes % width == 0) {
      return width;
    }
  }
  return 2;
}

template <class F, int kTokens, int kRowsQuant>
void Launch(const void* w, int64_t rows, int64_t cols, int64_t row_bytes, const float* x,
            int n_tokens, float* y, cudaStream_t stream) {
  // Float rows take 4x (f16) or 8x (f32) the shared memory of 4-bit ones: two rows per block.
  constexpr int kRows = F::kBlockElems == 1 ? 2 : kRowsQuant;
  constexpr int kSegmentBytes = kSegmentWeights / F::kBlockElems * F::kBlockBytes;
  const int64_t tail_weights = cols % kSegmentWeights;
  const int last_bytes = static_cast<int>(tail_weights / F::kBlockElems * F::kBlockBytes);
  const int width = CopyWidth(row_bytes, kSegmentBytes, last_bytes);
  const auto blocks = static_cast<unsigned>((rows + kRows - 1) / kRows);
  const auto* bytes = static_cast<const uint8_t*>(w);
  if (PipelineEnabled()) {
    FusedMatVecKernel<F, kTokens, kRows, true><<<blocks, kWarps * 32, 0, stream>>>(
        bytes, rows, cols, row_bytes, width, x, n_tokens, y);
  } else {
    FusedMatVecKernel<F, kTokens, kRows, false><<<blocks, kWarps * 32, 0, stream>>>(
        bytes, rows, cols, row_bytes, width, x, n_tokens, y);
  }
}

}  // namespace

bool FusedMatVecSupports(uint32_t type, int64_t cols) {
  bool whole_blocks = false;
  const bool known = DispatchFormat(type, [&](auto format) {
    // Segments hold whole blocks: the last, partial one too.
    whole_blocks = cols % decltype(format)::kBlockElems == 0;
  });
  return known && cols > 0 && cols % 16 == 0 && whole_blocks;
}

cudaError_t LaunchFusedMatVec(uint32_t type, const void* w, int64_t rows, int64_t cols,
                              int64_t row_bytes, const float* x, int n_tokens, float* y,
                              cudaStream_t stream) {
  if (!FusedMatVecSupports(type, cols) || n_tokens < 1 || n_tokens > kMaxFusedTokens ||
      rows < 1 || rows > (int64_t{1} << 31)) {
    return cudaErrorInvalidValue;
  }
  DispatchFormat(type, [&](auto format) {
    using F = decltype(format);
    // Rows per block: four while the tokens' sums fit in registers beside the decoded groups.
    if (n_tokens == 1) {
      Launch<F, 1, 4>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 2) {
      Launch<F, 2, 4>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 4) {
      Launch<F, 4, 4>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else if (n_tokens <= 8) {
      Launch<F, 8, 2>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    } else {
      Launch<F, 16, 2>(w, rows, cols, row_bytes, x, n_tokens, y, stream);
    }
  });
  return cudaGetLastError();
}

}  // namespace tessera::cuda
