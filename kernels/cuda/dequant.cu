// Dequantization of whole rows on the device: the embedding lookup (float32 rows picked by
// token id) and the fp16 tiles of the large-batch GEMM path. Each thread decodes one group of
// 16 weights (block_decode.cuh) and writes scale * q + offset with separate roundings
// (__fmul_rn / __fadd_rn, no contraction), the reference dequantizers' order of operations, so
// float32 output equals kernels/quant/ bit for bit. Float formats whose rows are not a multiple
// of 16 take a per-element path.
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/block_decode.cuh"
#include "kernels/cuda/launch.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void Store(float* out, float v) { *out = v; }
__device__ __forceinline__ void Store(uint16_t* out, float v) {
  *out = __half_as_ushort(__float2half_rn(v));
}

// The 16 values of a group to 16 consecutive outputs (16-byte aligned: cols % 16 == 0) with
// 16-byte stores: a warp writes whole sectors instead of 2- or 4-byte pieces (the fp16 GEMM
// tiles went from ~190 GB/s written with scalar stores).
__device__ __forceinline__ void Store16(float* out, const float (&v)[16]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    reinterpret_cast<float4*>(out)[k] =
        make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
  }
}
__device__ __forceinline__ void Store16(uint16_t* out, const float (&v)[16]) {
  uint32_t w[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    w[k] = uint32_t{__half_as_ushort(__float2half_rn(v[2 * k]))} |
           (uint32_t{__half_as_ushort(__float2half_rn(v[2 * k + 1]))} << 16);
  }
  reinterpret_cast<uint4*>(out)[0] = make_uint4(w[0], w[1], w[2], w[3]);
  reinterpret_cast<uint4*>(out)[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

// Row i of the output is row row_of(i) of W; grid: (groups per row / kThreads, n).
template <class F, class Out, bool kAligned16>
__global__ void DequantizeGroupsKernel(const uint8_t* __restrict__ w, int64_t cols,
                                       int64_t row_bytes, const int32_t* __restrict__ ids,
                                       int64_t row0, Out* __restrict__ out) {
  const int64_t i = blockIdx.y;
  const int64_t g = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (g >= cols / 16) return;
  const int64_t r = ids != nullptr ? int64_t{ids[i]} : row0 + i;
  Group16 grp;
  F::Decode(w + r * row_bytes, g, &grp);
  float v[16];
#pragma unroll
  for (int k = 0; k < 16; ++k) v[k] = __fadd_rn(__fmul_rn(grp.scale, grp.q[k]), grp.offset);
  Out* o = out + i * cols + g * 16;
  if constexpr (kAligned16) {
    Store16(o, v);
  } else {
#pragma unroll
    for (int k = 0; k < 16; ++k) Store(o + k, v[k]);
  }
}

// Float formats of any width, one element per thread.
template <class Out>
__global__ void DequantizeFloatKernel(uint32_t type, const uint8_t* __restrict__ w, int64_t cols,
                                      int64_t row_bytes, const int32_t* __restrict__ ids,
                                      int64_t row0, Out* __restrict__ out) {
  const int64_t i = blockIdx.y;
  const int64_t c = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (c >= cols) return;
  const int64_t r = ids != nullptr ? int64_t{ids[i]} : row0 + i;
  const uint8_t* row = w + r * row_bytes;
  float v;
  if (type == kF32) {
    v = reinterpret_cast<const float*>(row)[c];
  } else {
    const uint16_t bits = reinterpret_cast<const uint16_t*>(row)[c];
    v = type == kF16 ? HalfBitsToFloat(bits) : __uint_as_float(uint32_t{bits} << 16);
  }
  Store(out + i * cols + c, v);
}

template <class Out>
cudaError_t LaunchDequantize(uint32_t type, const void* w, int64_t cols, int64_t row_bytes,
                             const int32_t* ids, int64_t row0, int64_t n, Out* out,
                             cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (n > 65535 || cols <= 0) return cudaErrorInvalidValue;  // grid.y limit: callers chunk
  const auto* bytes = static_cast<const uint8_t*>(w);
  const bool is_float = type == kF32 || type == kF16 || type == kBF16;
  if (is_float && cols % 16 != 0) {
    const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(n));
    DequantizeFloatKernel<Out><<<grid, kThreads, 0, stream>>>(type, bytes, cols, row_bytes, ids,
                                                              row0, out);
    return cudaGetLastError();
  }
  const int64_t groups = cols / 16;
  const dim3 grid(static_cast<unsigned>((groups + kThreads - 1) / kThreads), static_cast<unsigned>(n));
  // Rows of cols % 16 == 0 elements keep a 16-byte aligned base 16-byte aligned.
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const bool known = DispatchFormat(type, [&](auto format) {
    if (aligned) {
      DequantizeGroupsKernel<decltype(format), Out, true>
          <<<grid, kThreads, 0, stream>>>(bytes, cols, row_bytes, ids, row0, out);
    } else {
      DequantizeGroupsKernel<decltype(format), Out, false>
          <<<grid, kThreads, 0, stream>>>(bytes, cols, row_bytes, ids, row0, out);
    }
  });
  if (!known) return cudaErrorInvalidValue;
  return cudaGetLastError();
}

__global__ void FloatToHalfKernel(const float* __restrict__ x, int64_t n, uint16_t* __restrict__ out) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i < n) out[i] = __half_as_ushort(__float2half_rn(x[i]));
}

}  // namespace

bool DequantizeSupports(uint32_t type) { return DispatchFormat(type, [](auto) {}); }

cudaError_t LaunchDequantizeRowsF32(uint32_t type, const void* w, int64_t cols,
                                    int64_t row_bytes, const int32_t* ids, int64_t n,
                                    float* out, cudaStream_t stream) {
  for (int64_t i = 0; i < n; i += 65535) {
    const int64_t chunk = n - i < 65535 ? n - i : 65535;
    const cudaError_t e =
        LaunchDequantize(type, w, cols, row_bytes, ids + i, 0, chunk, out + i * cols, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchDequantizeRowsF16(uint32_t type, const void* w, int64_t cols,
                                    int64_t row_bytes, int64_t row0, int64_t n_rows,
                                    uint16_t* out, cudaStream_t stream) {
  for (int64_t i = 0; i < n_rows; i += 65535) {
    const int64_t chunk = n_rows - i < 65535 ? n_rows - i : 65535;
    const cudaError_t e = LaunchDequantize<uint16_t>(type, w, cols, row_bytes, nullptr, row0 + i,
                                                     chunk, out + i * cols, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchFloatToHalf(const float* x, int64_t n, uint16_t* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FloatToHalfKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, n, out);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
