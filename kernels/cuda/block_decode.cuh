// Device-side decoding of GGUF blocks as they are stored, sixteen weights at a time.
//
// Every format Tessera implements is affine over each run of 16 consecutive weights of a row
// (the smallest sub-block of any format is 16): w_i = scale * q_i + offset. Decode() returns the
// sixteen q_i as exact small-integer floats together with (scale, offset), so that
//   - a dot product can be taken on the codes and scaled once per group (the fused matvec), and
//   - a dequantization computes scale * q + offset with one rounding each, in the reference's
//     order, which reproduces the reference dequantizers of kernels/quant/ bit for bit.
// Codes become floats with the "magic number" trick: the bits 0x4B000000 | c are the float
// 2^23 + c, so subtracting 2^23 + zero_point gives c - zero_point exactly (c < 2^8).
//
// Alignment: device rows are stored compactly (row r at r * row_bytes), so a block starts at a
// multiple of its size from a 256-byte aligned base (or from a 16-byte aligned shared-memory
// copy of whole blocks); each format reads with the widest load that size allows (18-byte Q4_0
// blocks: 2 bytes; 144-byte Q4_K blocks: 16 bytes).
#ifndef TESSERA_KERNELS_CUDA_BLOCK_DECODE_CUH_
#define TESSERA_KERNELS_CUDA_BLOCK_DECODE_CUH_

#include <cuda_fp16.h>

#include <cstdint>

namespace tessera::cuda {

// GGUF type ids (kernels/quant/types.h, which device code does not include).
enum TypeId : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30,
};

struct Group16 {
  float q[16];   // codes minus zero point, exact
  float scale;
  float offset;  // 0 for the symmetric formats (kHasOffset false)
};

__device__ __forceinline__ float HalfBitsToFloat(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}
// Plain (generic) loads: the same decoders read global memory (dequantization) and blocks the
// matvec has staged in shared memory.
__device__ __forceinline__ uint16_t LoadU16(const uint8_t* p) {
  return *reinterpret_cast<const unsigned short*>(p);
}
__device__ __forceinline__ uint32_t LoadU32(const uint8_t* p) {
  return *reinterpret_cast<const unsigned int*>(p);
}
// Code c (0..255) minus zero point, as a float (see the file comment).
__device__ __forceinline__ float CodeToFloat(uint32_t c, float zero) {
  return __int_as_float(0x4B000000u | c) - (8388608.0f + zero);
}

// 16 bytes at p as 4 little-endian words, with the widest loads kAlign allows.
template <int kAlign>
__device__ __forceinline__ void Load16Bytes(const uint8_t* p, uint32_t w[4]) {
  if constexpr (kAlign >= 16) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (kAlign >= 4) {
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = LoadU32(p + 4 * k);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = LoadU16(p + 4 * k) | (uint32_t{LoadU16(p + 4 * k + 2)} << 16);
  }
}
__device__ __forceinline__ uint32_t ByteOf(const uint32_t w[4], int i) {
  return (w[i / 4] >> (8 * (i % 4))) & 0xFFu;
}

// --- 32-weight blocks (kernels/quant/q4.h, q5.h, q8.h): group g is half (g & 1) of block g / 2.

struct Q4_0Format {  // w = d * (q - 8); element j < 16: low nibble of qs[j], else high nibble
  static constexpr int kBlockElems = 32, kBlockBytes = 18;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 1) * kBlockBytes;
    uint32_t w[4];
    Load16Bytes<2>(b + 2, w);
    const int shift = 4 * static_cast<int>(g & 1);
#pragma unroll
    for (int i = 0; i < 16; ++i) out->q[i] = CodeToFloat((ByteOf(w, i) >> shift) & 0xF, 8.0f);
    out->scale = HalfBitsToFloat(LoadU16(b));
    out->offset = 0.0f;
  }
};

struct Q4_1Format {  // w = d * q + m
  static constexpr int kBlockElems = 32, kBlockBytes = 20;
  static constexpr bool kHasOffset = true;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 1) * kBlockBytes;
    uint32_t w[4];
    Load16Bytes<4>(b + 4, w);
    const int shift = 4 * static_cast<int>(g & 1);
#pragma unroll
    for (int i = 0; i < 16; ++i) out->q[i] = CodeToFloat((ByteOf(w, i) >> shift) & 0xF, 0.0f);
    const uint32_t dm = LoadU32(b);
    out->scale = HalfBitsToFloat(static_cast<uint16_t>(dm & 0xFFFF));
    out->offset = HalfBitsToFloat(static_cast<uint16_t>(dm >> 16));
  }
};

struct Q5_0Format {  // w = d * (q - 16); 5th bit of element j is bit j of qh (little-endian)
  static constexpr int kBlockElems = 32, kBlockBytes = 22;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 1) * kBlockBytes;
    const int half = static_cast<int>(g & 1);
    const uint32_t qh = LoadU16(b + 2 + 2 * half);  // bits 16 * half .. 16 * half + 15
    uint32_t w[4];
    Load16Bytes<2>(b + 6, w);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t c = ((ByteOf(w, i) >> (4 * half)) & 0xF) | (((qh >> i) & 1u) << 4);
      out->q[i] = CodeToFloat(c, 16.0f);
    }
    out->scale = HalfBitsToFloat(LoadU16(b));
    out->offset = 0.0f;
  }
};

struct Q5_1Format {  // w = d * q + m
  static constexpr int kBlockElems = 32, kBlockBytes = 24;
  static constexpr bool kHasOffset = true;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 1) * kBlockBytes;
    const int half = static_cast<int>(g & 1);
    const uint32_t qh = LoadU32(b + 4) >> (16 * half);
    uint32_t w[4];
    Load16Bytes<8>(b + 8, w);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t c = ((ByteOf(w, i) >> (4 * half)) & 0xF) | (((qh >> i) & 1u) << 4);
      out->q[i] = CodeToFloat(c, 0.0f);
    }
    const uint32_t dm = LoadU32(b);
    out->scale = HalfBitsToFloat(static_cast<uint16_t>(dm & 0xFFFF));
    out->offset = HalfBitsToFloat(static_cast<uint16_t>(dm >> 16));
  }
};

struct Q8_0Format {  // w = d * q, q int8
  static constexpr int kBlockElems = 32, kBlockBytes = 34;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 1) * kBlockBytes;
    uint32_t w[4];
    Load16Bytes<2>(b + 2 + 16 * (g & 1), w);
    // Flipping the sign bit maps int8 q to q + 128 in 0..255.
#pragma unroll
    for (int i = 0; i < 16; ++i) out->q[i] = CodeToFloat(ByteOf(w, i) ^ 0x80u, 128.0f);
    out->scale = HalfBitsToFloat(LoadU16(b));
    out->offset = 0.0f;
  }
};

// --- k-quants (kernels/quant/kquants.h): group g is sub-group gi = g % 16 of super-block g / 16,
// i.e. elements e = 16 gi .. 16 gi + 15 of the super-block.

struct Q2_KFormat {  // w = (d * sc) * q - dmin * m; code: bits 2s of qs[32h + l], e = 128h + 32s + l
  static constexpr int kBlockElems = 256, kBlockBytes = 84;
  static constexpr bool kHasOffset = true;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 4) * kBlockBytes;
    const int gi = static_cast<int>(g & 15);
    const int h = gi / 8, s = (gi % 8) / 2;
    uint32_t w[4];
    Load16Bytes<4>(b + 16 + 32 * h + 16 * (gi % 2), w);
#pragma unroll
    for (int i = 0; i < 16; ++i) out->q[i] = CodeToFloat((ByteOf(w, i) >> (2 * s)) & 3, 0.0f);
    const uint32_t dd = LoadU32(b + 80);
    const uint32_t sc = b[gi];
    out->scale = HalfBitsToFloat(static_cast<uint16_t>(dd & 0xFFFF)) * static_cast<float>(sc & 0xF);
    out->offset = -(HalfBitsToFloat(static_cast<uint16_t>(dd >> 16)) * static_cast<float>(sc >> 4));
  }
};

struct Q3_KFormat {  // w = (d * (u - 32)) * q, q = 2 low bits - 4 * !hmask bit
  static constexpr int kBlockElems = 256, kBlockBytes = 110;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 4) * kBlockBytes;
    const int gi = static_cast<int>(g & 15);
    const int h = gi / 8, s = (gi % 8) / 2, l0 = 16 * (gi % 2);
    uint32_t lo[4], hm[4];
    Load16Bytes<2>(b + 32 + 32 * h + l0, lo);
    Load16Bytes<2>(b + l0, hm);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t c = ((ByteOf(lo, i) >> (2 * s)) & 3) | (((ByteOf(hm, i) >> (gi / 2)) & 1) << 2);
      out->q[i] = CodeToFloat(c, 4.0f);
    }
    const uint8_t* sc = b + 96;
    const int low = gi < 8 ? sc[gi] & 0xF : sc[gi - 8] >> 4;
    const int high = (sc[8 + gi % 4] >> (2 * (gi / 4))) & 3;
    out->scale = HalfBitsToFloat(LoadU16(b + 108)) * static_cast<float>((low | (high << 4)) - 32);
    out->offset = 0.0f;
  }
};

// The j-th 6-bit scale and min of Q4_K / Q5_K from their 12-byte packing (GetScaleMinK4).
__device__ __forceinline__ void ScaleMinK4(const uint8_t* q, int j, float* sc, float* m) {
  if (j < 4) {
    *sc = static_cast<float>(q[j] & 63);
    *m = static_cast<float>(q[j + 4] & 63);
  } else {
    *sc = static_cast<float>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<float>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

struct Q4_KFormat {  // w = (d * sc_j) * q - dmin * m_j; code: nibble s of qs[32c + l], e = 64c + 32s + l
  static constexpr int kBlockElems = 256, kBlockBytes = 144;
  static constexpr bool kHasOffset = true;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 4) * kBlockBytes;
    const int gi = static_cast<int>(g & 15);
    const int j = gi / 2;  // sub-block of 32
    uint32_t w[4];
    Load16Bytes<16>(b + 16 + 32 * (gi / 4) + 16 * (gi % 2), w);
    const int shift = 4 * (j % 2);
#pragma unroll
    for (int i = 0; i < 16; ++i) out->q[i] = CodeToFloat((ByteOf(w, i) >> shift) & 0xF, 0.0f);
    const uint32_t dd = LoadU32(b);
    float sc, m;
    ScaleMinK4(b + 4, j, &sc, &m);
    out->scale = HalfBitsToFloat(static_cast<uint16_t>(dd & 0xFFFF)) * sc;
    out->offset = -(HalfBitsToFloat(static_cast<uint16_t>(dd >> 16)) * m);
  }
};

struct Q5_KFormat {  // as Q4_K, 5th bit of element e = 32b + l in bit b of qh[l]
  static constexpr int kBlockElems = 256, kBlockBytes = 176;
  static constexpr bool kHasOffset = true;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 4) * kBlockBytes;
    const int gi = static_cast<int>(g & 15);
    const int j = gi / 2;
    uint32_t w[4], hb[4];
    Load16Bytes<16>(b + 48 + 32 * (gi / 4) + 16 * (gi % 2), w);
    Load16Bytes<16>(b + 16 + 16 * (gi % 2), hb);
    const int shift = 4 * (j % 2);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t c = ((ByteOf(w, i) >> shift) & 0xF) | (((ByteOf(hb, i) >> j) & 1) << 4);
      out->q[i] = CodeToFloat(c, 0.0f);
    }
    const uint32_t dd = LoadU32(b);
    float sc, m;
    ScaleMinK4(b + 4, j, &sc, &m);
    out->scale = HalfBitsToFloat(static_cast<uint16_t>(dd & 0xFFFF)) * sc;
    out->offset = -(HalfBitsToFloat(static_cast<uint16_t>(dd >> 16)) * m);
  }
};

struct Q6_KFormat {  // w = (d * sc_gi) * (u - 32); u: 4 bits from ql, 2 from qh
  static constexpr int kBlockElems = 256, kBlockBytes = 210;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const uint8_t* b = row + (g >> 4) * kBlockBytes;
    const int gi = static_cast<int>(g & 15);
    // Element e = 16 gi + i: low nibble (e % 128) / 64 of ql[64 (e / 128) + e % 64], high bits
    // 2 ((e % 128) / 32) of qh[32 (e / 128) + e % 32]; both runs are contiguous within a group.
    uint32_t lo[4], hi[4];
    Load16Bytes<2>(b + 64 * (gi / 8) + 16 * (gi % 4), lo);
    Load16Bytes<2>(b + 128 + 32 * (gi / 8) + 16 * (gi % 2), hi);
    const int lo_shift = 4 * ((gi % 8) / 4), hi_shift = 2 * ((gi % 8) / 2);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t u = ((ByteOf(lo, i) >> lo_shift) & 0xF) | (((ByteOf(hi, i) >> hi_shift) & 3) << 4);
      out->q[i] = CodeToFloat(u, 32.0f);
    }
    const int8_t sc = static_cast<int8_t>(b[192 + gi]);
    out->scale = HalfBitsToFloat(LoadU16(b + 208)) * static_cast<float>(sc);
    out->offset = 0.0f;
  }
};

// --- float formats: 16 elements per group (the fused path needs cols % 16 == 0 for these).

struct F32Format {
  static constexpr int kBlockElems = 1, kBlockBytes = 4;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    const float4* p = reinterpret_cast<const float4*>(row + g * 64);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float4 v = p[k];
      out->q[4 * k] = v.x, out->q[4 * k + 1] = v.y, out->q[4 * k + 2] = v.z, out->q[4 * k + 3] = v.w;
    }
    out->scale = 1.0f;
    out->offset = 0.0f;
  }
};

template <bool kBf16>
struct Half16Format {
  static constexpr int kBlockElems = 1, kBlockBytes = 2;
  static constexpr bool kHasOffset = false;
  __device__ static void Decode(const uint8_t* row, int64_t g, Group16* out) {
    uint32_t w[8];
    Load16Bytes<16>(row + g * 32, w);
    Load16Bytes<16>(row + g * 32 + 16, w + 4);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint16_t bits = static_cast<uint16_t>(w[i / 2] >> (16 * (i % 2)));
      out->q[i] = kBf16 ? __uint_as_float(uint32_t{bits} << 16) : HalfBitsToFloat(bits);
    }
    out->scale = 1.0f;
    out->offset = 0.0f;
  }
};
using F16Format = Half16Format<false>;
using BF16Format = Half16Format<true>;

// Calls f(Format{}) for `type`; returns false for a type without a device decoder.
template <class Fn>
__host__ bool DispatchFormat(uint32_t type, Fn&& f) {
  switch (type) {
    case kQ4_0: f(Q4_0Format{}); return true;
    case kQ4_1: f(Q4_1Format{}); return true;
    case kQ5_0: f(Q5_0Format{}); return true;
    case kQ5_1: f(Q5_1Format{}); return true;
    case kQ8_0: f(Q8_0Format{}); return true;
    case kQ2_K: f(Q2_KFormat{}); return true;
    case kQ3_K: f(Q3_KFormat{}); return true;
    case kQ4_K: f(Q4_KFormat{}); return true;
    case kQ5_K: f(Q5_KFormat{}); return true;
    case kQ6_K: f(Q6_KFormat{}); return true;
    case kF32: f(F32Format{}); return true;
    case kF16: f(F16Format{}); return true;
    case kBF16: f(BF16Format{}); return true;
    default: return false;
  }
}

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_BLOCK_DECODE_CUH_
