// Reference Q5_0 and Q5_1 (layout in q5.h).
//
// Bit-exact with the gguf package (gguf/quants.py): float32 intermediates, one rounding per
// operation, same order.
//   Q5_0 quantize: m = the element of largest |x| (first one on ties, sign kept);
//                  d = m / -16; id = d ? 1/d : 0; q = min(31, trunc(x * id + 16.5)).
//   Q5_1 quantize: d = (max - min) / 31; id = d ? 1/d : 0;
//                  q = min(31, trunc((x - min) * id + 0.5)); stored m = min.
//   The codes use the float32 d; d and m are then stored as fp16.
//   Dequantize: Q5_0 w = d * (q - 16); Q5_1 w = (d * q) + m.
// Code q of element j: low nibble in qs (j < 16: low half of qs[j]; else high half of
// qs[j - 16]), 5th bit = bit j of qh read as a little-endian uint32.
#include "kernels/quant/q5.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tessera {
namespace {

// trunc(v) clamped to [0, 31] (numpy: trunc -> astype(uint8) -> clip); NaN maps to 0.
inline uint8_t TruncCode(float v) {
  if (!(v > 0.0f)) return 0;
  if (v >= 31.0f) return 31;
  return static_cast<uint8_t>(std::trunc(v));
}

inline void Pack(const uint8_t* q, uint8_t* qh, uint8_t* qs) {
  uint32_t high = 0;
  for (int j = 0; j < 32; ++j) high |= static_cast<uint32_t>(q[j] >> 4) << j;
  for (int i = 0; i < 4; ++i) qh[i] = static_cast<uint8_t>(high >> (8 * i));
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

inline int Code(const uint8_t* qh, const uint8_t* qs, int j) {
  const uint32_t high = qh[0] | (qh[1] << 8) | (qh[2] << 16) | (static_cast<uint32_t>(qh[3]) << 24);
  const int low = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
  return low | static_cast<int>(((high >> j) & 1u) << 4);
}

}  // namespace

void DequantizeQ5_0Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK5_0; ++b) {
    BlockQ5_0 blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);  // blocks may be unaligned
    const float d = Fp16ToFloat(blk.d);
    for (int j = 0; j < kQK5_0; ++j) {
      out[b * kQK5_0 + j] = d * static_cast<float>(Code(blk.qh, blk.qs, j) - 16);
    }
  }
}

void QuantizeQ5_0Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK5_0; ++b) {
    const float* x = in + b * kQK5_0;
    float amax = 0.0f;
    float max = 0.0f;  // signed value of the first element with the largest magnitude
    for (int j = 0; j < kQK5_0; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[kQK5_0];
    for (int j = 0; j < kQK5_0; ++j) q[j] = TruncCode(x[j] * id + 16.5f);
    BlockQ5_0 blk;
    blk.d = FloatToFp16(d);
    Pack(q, blk.qh, blk.qs);
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

void DequantizeQ5_1Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK5_1; ++b) {
    BlockQ5_1 blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);
    const float d = Fp16ToFloat(blk.d);
    const float m = Fp16ToFloat(blk.m);
    for (int j = 0; j < kQK5_1; ++j) {
      const float dq = d * static_cast<float>(Code(blk.qh, blk.qs, j));
      out[b * kQK5_1 + j] = dq + m;
    }
  }
}

void QuantizeQ5_1Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK5_1; ++b) {
    const float* x = in + b * kQK5_1;
    float max = x[0];
    float min = x[0];
    for (int j = 1; j < kQK5_1; ++j) {
      max = std::max(max, x[j]);
      min = std::min(min, x[j]);
    }
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[kQK5_1];
    for (int j = 0; j < kQK5_1; ++j) q[j] = TruncCode((x[j] - min) * id + 0.5f);
    BlockQ5_1 blk;
    blk.d = FloatToFp16(d);
    blk.m = FloatToFp16(min);
    Pack(q, blk.qh, blk.qs);
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

}  // namespace tessera
