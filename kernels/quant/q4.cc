// Reference Q4_0 and Q4_1 (layout in q4.h).
//
// Both are bit-exact with the gguf package (gguf/quants.py), which mirrors ggml's reference C:
// every intermediate is float32 and each operation rounds once (no fused multiply-add), so the
// C++ below performs the same float operations in the same order.
//   Q4_0 quantize: m = the element of largest |x| (first one on ties, sign kept);
//                  d = m / -8; id = d ? 1/d : 0; q = min(15, trunc(x * id + 8.5)).
//                  The extreme element maps to q = 0 (value -8 d = m); +8 d is not reachable,
//                  which is why the code range is asymmetric.
//   Q4_1 quantize: d = (max - min) / 15; id = d ? 1/d : 0;
//                  q = min(15, trunc((x - min) * id + 0.5)); stored m = min.
//   d and m are stored as fp16, but the codes are computed with the float32 d (as gguf does).
//   Dequantize: Q4_0 w = d * (q - 8); Q4_1 w = (d * q) + m, two float32 roundings.
#include "kernels/quant/q4.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tessera {
namespace {

// trunc(v) clamped to [0, hi], as numpy's trunc -> astype(uint8) -> clip(0, hi) for the values
// the quantizers produce (v > -1). NaN maps to 0 instead of being undefined behaviour.
inline uint8_t TruncCode(float v, int hi) {
  if (!(v > 0.0f)) return 0;
  if (v >= static_cast<float>(hi)) return static_cast<uint8_t>(hi);
  return static_cast<uint8_t>(std::trunc(v));
}

// Element j < 16 goes to the low nibble of qs[j], element j + 16 to its high nibble.
inline void PackNibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}
inline int Nibble(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4; }

}  // namespace

void DequantizeQ4_0Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK4_0; ++b) {
    BlockQ4_0 blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);  // blocks may be unaligned
    const float d = Fp16ToFloat(blk.d);
    for (int j = 0; j < kQK4_0; ++j) {
      out[b * kQK4_0 + j] = d * static_cast<float>(Nibble(blk.qs, j) - 8);
    }
  }
}

void QuantizeQ4_0Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK4_0; ++b) {
    const float* x = in + b * kQK4_0;
    float amax = 0.0f;
    float max = 0.0f;  // signed value of the first element with the largest magnitude
    for (int j = 0; j < kQK4_0; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;  // -0.0 for an all-zero block, as in gguf
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[kQK4_0];
    for (int j = 0; j < kQK4_0; ++j) q[j] = TruncCode(x[j] * id + 8.5f, 15);
    BlockQ4_0 blk;
    blk.d = FloatToFp16(d);
    PackNibbles(q, blk.qs);
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

void DequantizeQ4_1Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK4_1; ++b) {
    BlockQ4_1 blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);
    const float d = Fp16ToFloat(blk.d);
    const float m = Fp16ToFloat(blk.m);
    for (int j = 0; j < kQK4_1; ++j) {
      const float dq = d * static_cast<float>(Nibble(blk.qs, j));
      out[b * kQK4_1 + j] = dq + m;
    }
  }
}

void QuantizeQ4_1Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK4_1; ++b) {
    const float* x = in + b * kQK4_1;
    float max = x[0];
    float min = x[0];
    for (int j = 1; j < kQK4_1; ++j) {
      max = std::max(max, x[j]);
      min = std::min(min, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[kQK4_1];
    for (int j = 0; j < kQK4_1; ++j) q[j] = TruncCode((x[j] - min) * id + 0.5f, 15);
    BlockQ4_1 blk;
    blk.d = FloatToFp16(d);
    blk.m = FloatToFp16(min);
    PackNibbles(q, blk.qs);
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

}  // namespace tessera
