// Reference Q5_K (struct in kquants.h). Super-block of 256 weights = 8 sub-blocks of 32.
//
// Layout facts (ggml / GGUF, as decoded by gguf/quants.py):
//   6-bit scale sc_j and min m_j of sub-block j (0..7) packed in scales[12]: see GetScaleMinK4.
//   Element e = 64 c + 32 s + l (c 0..3, s 0..1, l 0..31): low 4 code bits in nibble s (low
//   first) of qs[32 c + l]; element e = 32 b + l: 5th bit in bit b of qh[l].
//   Dequantize (float32, this order): w = (d * sc_j) * q - (dmin * m_j), q in 0..31.
//
// Quantizer (our own; gguf has none): as Q4_K with codes 0..31.
// Expected relative RMS error on Gaussian data: 0.036 (tested < 0.038).
#include <cstring>

#include "kernels/quant/kquant_fit.h"
#include "kernels/quant/kquants.h"

namespace tessera {
namespace {

constexpr int kSub = 32;
constexpr int kNumSub = kQK_K / kSub;

}  // namespace

void DequantizeQ5_KRef(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK_K; ++b) {
    BlockQ5_K blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);  // blocks may be unaligned
    const float d = Fp16ToFloat(blk.d);
    const float dmin = Fp16ToFloat(blk.dmin);
    for (int j = 0; j < kNumSub; ++j) {
      uint8_t sc, m;
      GetScaleMinK4(j, blk.scales, &sc, &m);
      const float dl = d * static_cast<float>(sc);
      const float ml = dmin * static_cast<float>(m);
      for (int k = 0; k < kSub; ++k) {
        const int e = kSub * j + k;
        const int low = (blk.qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0xF;
        const int high = (blk.qh[e % 32] >> (e / 32)) & 1;
        out[b * kQK_K + e] = dl * static_cast<float>(low | (high << 4)) - ml;
      }
    }
  }
}

void QuantizeQ5_KRef(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK_K; ++b) {
    const float* x = in + b * kQK_K;
    BlockQ5_K blk;
    uint8_t sc[kNumSub], mc[kNumSub];
    FitSuperBlockK4(x, 31, &blk.d, &blk.dmin, sc, mc, blk.scales);
    const float d = Fp16ToFloat(blk.d);
    const float dmin = Fp16ToFloat(blk.dmin);
    std::memset(blk.qs, 0, sizeof blk.qs);
    std::memset(blk.qh, 0, sizeof blk.qh);
    for (int j = 0; j < kNumSub; ++j) {
      const float dl = d * static_cast<float>(sc[j]);
      const float ml = dmin * static_cast<float>(mc[j]);
      for (int k = 0; k < kSub; ++k) {
        const int e = kSub * j + k;
        const int q = dl > 0.0f ? RoundClamp((x[e] + ml) / dl, 0, 31) : 0;
        blk.qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>((q & 0xF) << (4 * ((e / 32) % 2)));
        blk.qh[e % 32] |= static_cast<uint8_t>((q >> 4) << (e / 32));
      }
    }
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

}  // namespace tessera
