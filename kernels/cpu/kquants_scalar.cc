// Portable k-quant kernels (Q2_K..Q6_K against ActBlock256): the baseline of the SIMD ones.
//
// Each super-block is decoded into its 256 integer codes and sub-block scales (layouts in
// kernels/quant/kquants.h, as ggml stores them), then
//   y += d * d_a * sum_j sc_j * sum_{k in j} q_k a_k  -  dmin * d_a * sum_j m_j * sum_{k in j} a_k
// with every inner sum exact in int32; the per-16 activation sums (bsums) serve the mins.
// Super-blocks are summed in the canonical order of dot_kernels.h (eight chains by super-block
// index mod 8, then CombineChains), which the SIMD kernels follow bit for bit.
#include <cstring>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/kquant_decode.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

template <GgmlType kType>
void RowDotKQuant(const uint8_t* w_row, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                  int n_act, float* y, int64_t y_stride) {
  float chains[kMaxActRows][kSumChains] = {};
  static const KDecodeFn decode = FindKDecoder(kType);
  const int64_t block_bytes = FindQuantTraits(kType)->block_bytes;
  KDecoded dec;
  for (int64_t i = 0; i < n_blocks; ++i) {
    decode(w_row + i * block_bytes, &dec);
    for (int b = 0; b < n_act; ++b) {
      const auto& a = reinterpret_cast<const ActBlock256*>(act + b * act_stride)[i];
      int32_t sumi = 0, summ = 0;
      for (int j = 0; j < 16; ++j) {
        int32_t dot = 0;
        for (int k = 16 * j; k < 16 * j + 16; ++k) dot += dec.q[k] * a.qs[k];
        sumi += dec.sc[j] * dot;
        summ += dec.m[j] * a.bsums[j];
      }
      // The canonical term (dot_kernels.h); for Q3_K/Q6_K the second product is +0.
      const float t = (dec.d * a.d) * static_cast<float>(sumi) -
                      (dec.dmin * a.d) * static_cast<float>(summ);
      chains[b][i % kSumChains] += t;
    }
  }
  for (int b = 0; b < n_act; ++b) y[b * y_stride] = CombineChains(chains[b]);
}

}  // namespace

RowDotFn ScalarKQuantRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return RowDotKQuant<GgmlType::kQ2_K>;
    case GgmlType::kQ3_K:
      return RowDotKQuant<GgmlType::kQ3_K>;
    case GgmlType::kQ4_K:
      return RowDotKQuant<GgmlType::kQ4_K>;
    case GgmlType::kQ5_K:
      return RowDotKQuant<GgmlType::kQ5_K>;
    case GgmlType::kQ6_K:
      return RowDotKQuant<GgmlType::kQ6_K>;
    default:
      return nullptr;
  }
}

}  // namespace tessera
