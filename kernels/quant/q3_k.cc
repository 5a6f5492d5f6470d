// Reference Q3_K (struct in kquants.h). Super-block of 256 weights = 16 sub-blocks of 16,
// symmetric: no min.
//
// Layout facts (ggml / GGUF, as decoded by gguf/quants.py):
//   Sub-block scale i (0..15) is a 6-bit u = sc_i + 32: its low 4 bits are the low nibble of
//   scales[i] (i < 8) or the high nibble of scales[i - 8] (i >= 8); its high 2 bits are bits
//   2 (i / 4) .. +1 of scales[8 + i % 4].
//   Element e = 128 h + 32 s + l (h 0..1, s 0..3, l 0..31): 2 low code bits in bits 2s..2s+1 of
//   qs[32 h + l]; element e = 32 b + l: high bit in bit b of hmask[l]. The signed code is
//   q = low - 4 when the high bit is 0, low when it is 1, i.e. q = (stored 3-bit value) - 4.
//   Dequantize (float32): w = (d * (u - 32)) * q.
//
// Quantizer (our own; gguf has none): per sub-block FitSignedScale with codes -4..3; the 16
// signed scales are quantized to -32..31 against fp16 d = (scale of largest magnitude) / -32;
// finally every code is the nearest one for the stored d * sc.
// Expected relative RMS error on Gaussian data: 0.143 (tested < 0.15).
#include <cstring>

#include "kernels/quant/kquant_fit.h"
#include "kernels/quant/kquants.h"

namespace tessera {
namespace {

constexpr int kSub = 16;
constexpr int kNumSub = kQK_K / kSub;

inline int Scale(const uint8_t* scales, int i) {
  const int low = i < 8 ? scales[i] & 0xF : scales[i - 8] >> 4;
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

inline int Code(const BlockQ3_K& blk, int e) {
  const int h = e / 128, s = (e % 128) / 32, l = e % 32;
  const int low = (blk.qs[32 * h + l] >> (2 * s)) & 3;
  const int high = (blk.hmask[l] >> (e / 32)) & 1;
  return low - (high ? 0 : 4);
}

}  // namespace

void DequantizeQ3_KRef(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK_K; ++b) {
    BlockQ3_K blk;
    std::memcpy(&blk, bytes + b * sizeof blk, sizeof blk);  // blocks may be unaligned
    const float d = Fp16ToFloat(blk.d);
    for (int e = 0; e < kQK_K; ++e) {
      const float dl = d * static_cast<float>(Scale(blk.scales, e / kSub));
      out[b * kQK_K + e] = dl * static_cast<float>(Code(blk, e));
    }
  }
}

void QuantizeQ3_KRef(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t b = 0; b < n_elems / kQK_K; ++b) {
    const float* x = in + b * kQK_K;
    float scale[kNumSub];
    for (int i = 0; i < kNumSub; ++i) scale[i] = FitSignedScale(x + kSub * i, kSub, 4);
    BlockQ3_K blk;
    int sc[kNumSub];
    blk.d = QuantizeSignedScales(scale, kNumSub, 32, sc);
    const float d = Fp16ToFloat(blk.d);
    std::memset(blk.scales, 0, sizeof blk.scales);
    std::memset(blk.qs, 0, sizeof blk.qs);
    std::memset(blk.hmask, 0, sizeof blk.hmask);
    for (int i = 0; i < kNumSub; ++i) {
      const int u = sc[i] + 32;  // 0..63
      if (i < 8) {
        blk.scales[i] |= static_cast<uint8_t>(u & 0xF);
      } else {
        blk.scales[i - 8] |= static_cast<uint8_t>((u & 0xF) << 4);
      }
      blk.scales[8 + i % 4] |= static_cast<uint8_t>((u >> 4) << (2 * (i / 4)));
      const float dl = d * static_cast<float>(sc[i]);
      for (int k = 0; k < kSub; ++k) {
        const int e = kSub * i + k;
        const int q = dl != 0.0f ? RoundClamp(x[e] / dl, -4, 3) : 0;
        const int stored = q + 4;  // 0..7: bit 2 goes to hmask, bits 0..1 to qs
        const int h = e / 128, s = (e % 128) / 32, l = e % 32;
        blk.qs[32 * h + l] |= static_cast<uint8_t>((stored & 3) << (2 * s));
        blk.hmask[l] |= static_cast<uint8_t>((stored >> 2) << (e / 32));
      }
    }
    std::memcpy(bytes + b * sizeof blk, &blk, sizeof blk);
  }
}

}  // namespace tessera
