// Reference Q8_0 (layout in q8.h), bit-exact with the gguf package (gguf/quants.py):
//   d = max|x| / 127 (float32); id = d ? 1/d : 0; q = roundf(x * id), half away from zero,
//   computed as numpy's np_roundf: a = |v|, f = floor(a), r = f + floor(2 (a - f)), q = sign(v) r.
//   d is stored as fp16 after the codes were computed with the float32 d.
//   Dequantize: w = q * d (float32).
#include "kernels/quant/q8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tessera {

void DequantizeQ8_0Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK8_0; ++b) {
    BlockQ8_0 blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);  // blocks may be unaligned
    const float d = Fp16ToFloat(blk.d);
    for (int j = 0; j < kQK8_0; ++j) out[b * kQK8_0 + j] = static_cast<float>(blk.qs[j]) * d;
  }
}

void QuantizeQ8_0Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK8_0; ++b) {
    const float* x = in + b * kQK8_0;
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 blk;
    blk.d = FloatToFp16(d);
    for (int j = 0; j < kQK8_0; ++j) {
      const float v = x[j] * id;
      const float a = std::fabs(v);
      const float f = std::floor(a);
      float r = f + std::floor(2.0f * (a - f));
      if (std::isnan(r)) r = 0.0f;  // |v| <= 127 by construction for finite input; these two
      if (r > 127.0f) r = 127.0f;   // lines only keep the int conversion defined otherwise
      blk.qs[j] = static_cast<int8_t>(v < 0.0f ? -static_cast<int>(r) : static_cast<int>(r));
    }
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

}  // namespace tessera
