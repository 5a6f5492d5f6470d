// The loops shared by the x86 kernel files: one weight row against NA activation rows, block
// by block, with the per-format arithmetic supplied by a format struct F. Internal linkage on
// purpose, like simd_x86.h: each including file instantiates them with its own ISA flags.
#ifndef TESSERA_KERNELS_CPU_ROW_DOT_X86_H_
#define TESSERA_KERNELS_CPU_ROW_DOT_X86_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

// Scales of 8 consecutive blocks: the fp16 at p, p + kStride, ..., p + 7 kStride as floats.
// Gathered with scalar loads and shifts (idle integer ports) and converted by one vcvtph2ps.
// The empty asm keeps the compiler from turning the shifts into vector shuffles.
template <int kStride>
inline __m256 Fp16x8(const uint8_t* p) {
  uint64_t half[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    for (int j = 0; j < 4; ++j) {
      uint16_t h;
      std::memcpy(&h, p + (4 * k + j) * kStride, 2);
      half[k] |= static_cast<uint64_t>(h) << (16 * j);
    }
    __asm__("" : "+r"(half[k]));
  }
  const __m128i v = _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(half[0])),
                                     static_cast<int64_t>(half[1]), 1);
  return _mm256_cvtph_ps(v);
}

// Software prefetch of the weight stream into L2, 32 KiB ahead. The weights are read once,
// sequentially, but the kernels do enough work per byte that the out-of-order window alone
// keeps too few cache misses in flight: one core streamed ~11-12 GB/s without this and
// ~14-18 GB/s with it (Zen 4, 2026-11-22; L1-targeted or shorter-distance prefetches gained
// less). Prefetching past the end of the weights is harmless (prefetches never fault).
constexpr int kPrefetchBytes = 32 * 1024;

template <int kBytes>
inline void PrefetchWeights(const uint8_t* p) {
  for (int o = 0; o < kBytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + o), _MM_HINT_T1);
}

// Lane j of the result is the sum of the int32 lanes of block j, given q0 = hadd(hadd(b0, b1),
// hadd(b2, b3)) and q1 the same of blocks 4..7 (each half of q holds the sums of that half's
// lanes).
inline __m256i JoinHalves(__m256i q0, __m256i q1) {
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                          _mm256_permute2x128_si256(q0, q1, 0x31));
}

// The float side of eight blocks of a 32-element format (lane j = block i + j) in the
// canonical order: dot_i the exact integer block dots, dw the weight scales, field the
// format's offset field (F::kOffsetField), da / ds / bias the activation rows' d, ds and
// kCodeBias * sum of those blocks. Adds t = fl(fl(dw da) dot) + fl(off ds) to each row's
// accumulator (lane c = chain c).
template <typename F, int NA>
inline void AddBlockTerms(const __m256i (&dot_i)[NA], __m256 dw, __m256 field,
                          const __m256 (&da)[NA], const __m256 (&ds)[NA],
                          const __m256i (&bias)[NA], __m256 (&acc)[NA]) {
  constexpr bool kOffset = F::kOffsetFactor != 0.0f;
  const __m256 off = _mm256_mul_ps(_mm256_set1_ps(F::kOffsetFactor), field);  // exact: 1, -8, -16
  for (int b = 0; b < NA; ++b) {
    __m256i d = dot_i[b];
    if constexpr (F::kCodeBias != 0) {
      d = _mm256_sub_epi32(d, _mm256_mullo_epi32(bias[b], _mm256_set1_epi32(F::kCodeBias)));
    }
    const __m256 dot = _mm256_cvtepi32_ps(d);
    __m256 t = Rounded(_mm256_mul_ps(_mm256_mul_ps(dw, da[b]), dot));
    if constexpr (kOffset) t = _mm256_add_ps(t, Rounded(_mm256_mul_ps(off, ds[b])));
    acc[b] = _mm256_add_ps(acc[b], t);
  }
}

// One weight row of 32-element blocks against NA activation rows (ActRow32), in the canonical
// order of dot_kernels.h: lane c of each row's accumulator is chain c, so eight consecutive
// blocks i..i+7 are one step: their exact integer dots reduced into one int32 vector (lane j =
// block i + j), converted, scaled by the eight d_w * d_a products, their offset terms added,
// and the result added to the accumulator. All rows of a call share the weight decoding but
// nothing of the float arithmetic, so a row's bits do not depend on NA.
//
// F (a format on one ISA) provides:
//   kBytes              bytes per block; its fp16 scale d is at offset 0
//   Codes(block)        the 32 codes as bytes in element order
//   Dot(codes, a)       8 int32 lanes summing exactly to codes . a (a: 32 int8 activations)
//   kOffsetFactor, kOffsetField: off_w = kOffsetFactor * (fp16 at kOffsetField), e.g. Q4_0:
//                       -8 and 0 (d itself), Q4_1: 1 and the offset of m; 0: no offset term.
//   kCodeBias           Codes are the codes plus this (to make signed codes unsigned); the
//                       block dot gets kCodeBias * sum(a) subtracted, in integers (exact).
template <typename F, int NA, bool kFull>
inline void Block32Step(const uint8_t* wb, int n, const ActRow32 (&a)[NA], int64_t i,
                        __m256 (&acc)[NA]) {
  constexpr bool kOffset = F::kOffsetFactor != 0.0f;
  __m256 dw, field = _mm256_setzero_ps(), da[NA], ds[NA];
  __m256i bias[NA] = {};  // sum(a) of the eight blocks (formats with a kCodeBias)
  if constexpr (kFull) {
    PrefetchWeights<8 * F::kBytes>(wb);
    dw = Fp16x8<F::kBytes>(wb);
    if constexpr (kOffset) field = Fp16x8<F::kBytes>(wb + F::kOffsetField);
    for (int b = 0; b < NA; ++b) {
      da[b] = _mm256_loadu_ps(a[b].d + i);
      ds[b] = _mm256_loadu_ps(a[b].ds + i);
      if constexpr (F::kCodeBias != 0) bias[b] = Load256(a[b].sum + i);
    }
  } else {
    // The last n < 8 blocks: lanes n..7 get scales 0 and dots 0, so t = +0 there, which
    // leaves those chains unchanged. Masked loads: nothing is read past the row.
    uint16_t h[8] = {}, hf[8] = {};
    for (int j = 0; j < n; ++j) {
      std::memcpy(&h[j], wb + j * F::kBytes, 2);
      std::memcpy(&hf[j], wb + j * F::kBytes + F::kOffsetField, 2);
    }
    dw = _mm256_cvtph_ps(Load128(h));
    if constexpr (kOffset) field = _mm256_cvtph_ps(Load128(hf));
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int b = 0; b < NA; ++b) {
      da[b] = _mm256_maskload_ps(a[b].d + i, mask);
      ds[b] = _mm256_maskload_ps(a[b].ds + i, mask);
      if constexpr (F::kCodeBias != 0) {
        bias[b] = _mm256_maskload_epi32(reinterpret_cast<const int*>(a[b].sum + i), mask);
      }
    }
  }
  // dot[b] lane j = the integer dot of block i + j: pairs of blocks reduced by vphaddd as
  // soon as they are computed (few live registers), then the two halves of the row added.
  // q[half] = sums of lanes 0..3 of blocks 4 half + 0..3 | sums of their lanes 4..7.
  __m256i q[2][NA];
  for (int half = 0; half < 2; ++half) {
    __m256i h[2][NA];
    for (int p = 0; p < 2; ++p) {
      __m256i d[2][NA];
      for (int e = 0; e < 2; ++e) {
        const int j = 4 * half + 2 * p + e;
        if (kFull || j < n) {
          const __m256i codes = F::Codes(wb + j * F::kBytes);
          for (int b = 0; b < NA; ++b) d[e][b] = F::Dot(codes, a[b].qs + 32 * (i + j));
        } else {
          for (int b = 0; b < NA; ++b) d[e][b] = _mm256_setzero_si256();
        }
      }
      for (int b = 0; b < NA; ++b) h[p][b] = _mm256_hadd_epi32(d[0][b], d[1][b]);
    }
    for (int b = 0; b < NA; ++b) q[half][b] = _mm256_hadd_epi32(h[0][b], h[1][b]);
  }
  __m256i dot_i[NA];
  for (int b = 0; b < NA; ++b) dot_i[b] = JoinHalves(q[0][b], q[1][b]);
  AddBlockTerms<F, NA>(dot_i, dw, field, da, ds, bias, acc);
}

template <typename F, int NA>
void RowDotBlock32(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                   float* y, int64_t y_stride) {
  ActRow32 a[NA];
  __m256 acc[NA];
  for (int b = 0; b < NA; ++b) {
    a[b] = ViewActRow32(act + b * act_stride, n_blocks);
    acc[b] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 8 <= n_blocks; i += 8) Block32Step<F, NA, true>(w + i * F::kBytes, 8, a, i, acc);
  if (i < n_blocks) {
    Block32Step<F, NA, false>(w + i * F::kBytes, static_cast<int>(n_blocks - i), a, i, acc);
  }
  for (int b = 0; b < NA; ++b) y[b * y_stride] = HorizontalSum(acc[b]);
}

// What a k-quant format's Dot<NA> (kquants_x86.h) reports for one super-block: per row, int32
// lanes summing exactly to its sumi and (formats with kMins) summ, and the fp16 scales.
template <int NA>
struct KSums {
  __m256i sumi[NA];
  __m256i mins[NA];
  float d = 0.0f, dmin = 0.0f;
};

// Super-blocks i..i+n-1 (n <= 8) of a k-quant row against NA activation rows, in the canonical
// order of dot_kernels.h: F::Dot gives each super-block's integer lanes, eight super-blocks'
// lanes are reduced as in Block32Step (lane j = super-block i + j), and the float terms of the
// eight are computed at once and added to the accumulator (lane c = chain c). Lanes past n
// get scales 0 and sums 0, so t = +0 there.
template <typename F, int NA, bool kFull>
inline void KStep(const uint8_t* w, int n, const uint8_t* act, int64_t act_stride, int64_t i,
                  __m256 (&acc)[NA]) {
  using Block = typename F::Block;
  alignas(32) float dd[NA][8] = {}, dm[NA][8] = {};  // d * d_a, dmin * d_a per super-block
  __m256i qi[2][NA], qm[2][NA];
  for (int half = 0; half < 2; ++half) {
    __m256i hi[2][NA], hm[2][NA];
    for (int p = 0; p < 2; ++p) {
      KSums<NA> s[2];
      for (int e = 0; e < 2; ++e) {
        const int j = 4 * half + 2 * p + e;
        if (kFull || j < n) {
          const ActBlock256* a[NA];
          for (int b = 0; b < NA; ++b) {
            a[b] = reinterpret_cast<const ActBlock256*>(act + b * act_stride) + i + j;
          }
          const uint8_t* wb = w + (i + j) * sizeof(Block);
          PrefetchWeights<sizeof(Block)>(wb);
          F::template Dot<NA>(wb, a, &s[e]);
          for (int b = 0; b < NA; ++b) {
            dd[b][j] = s[e].d * a[b]->d;
            if constexpr (F::kMins) dm[b][j] = s[e].dmin * a[b]->d;
          }
        } else {
          for (int b = 0; b < NA; ++b) s[e].sumi[b] = s[e].mins[b] = _mm256_setzero_si256();
        }
      }
      for (int b = 0; b < NA; ++b) {
        hi[p][b] = _mm256_hadd_epi32(s[0].sumi[b], s[1].sumi[b]);
        if constexpr (F::kMins) hm[p][b] = _mm256_hadd_epi32(s[0].mins[b], s[1].mins[b]);
      }
    }
    for (int b = 0; b < NA; ++b) {
      qi[half][b] = _mm256_hadd_epi32(hi[0][b], hi[1][b]);
      if constexpr (F::kMins) qm[half][b] = _mm256_hadd_epi32(hm[0][b], hm[1][b]);
    }
  }
  for (int b = 0; b < NA; ++b) {
    const __m256 sumi = _mm256_cvtepi32_ps(JoinHalves(qi[0][b], qi[1][b]));
    __m256 t = Rounded(_mm256_mul_ps(_mm256_load_ps(dd[b]), sumi));
    if constexpr (F::kMins) {
      const __m256 summ = _mm256_cvtepi32_ps(JoinHalves(qm[0][b], qm[1][b]));
      t = _mm256_sub_ps(t, Rounded(_mm256_mul_ps(_mm256_load_ps(dm[b]), summ)));
    }
    acc[b] = _mm256_add_ps(acc[b], t);
  }
}

template <typename F, int NA>
void RowDotK(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride, float* y,
             int64_t y_stride) {
  __m256 acc[NA];
  for (int b = 0; b < NA; ++b) acc[b] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n_blocks; i += 8) KStep<F, NA, true>(w, 8, act, act_stride, i, acc);
  if (i < n_blocks) {
    KStep<F, NA, false>(w, static_cast<int>(n_blocks - i), act, act_stride, i, acc);
  }
  for (int b = 0; b < NA; ++b) y[b * y_stride] = HorizontalSum(acc[b]);
}

// RowDotFn entry points: dispatch n_act to the unrolled instantiations.
template <typename F>
void Block32Entry(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                  int n_act, float* y, int64_t y_stride) {
  switch (n_act) {
    case 1:
      return RowDotBlock32<F, 1>(w, n_blocks, act, act_stride, y, y_stride);
    case 2:
      return RowDotBlock32<F, 2>(w, n_blocks, act, act_stride, y, y_stride);
    case 3:
      return RowDotBlock32<F, 3>(w, n_blocks, act, act_stride, y, y_stride);
    default:
      return RowDotBlock32<F, 4>(w, n_blocks, act, act_stride, y, y_stride);
  }
}

template <typename F>
void KEntry(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride, int n_act,
            float* y, int64_t y_stride) {
  switch (n_act) {
    case 1:
      return RowDotK<F, 1>(w, n_blocks, act, act_stride, y, y_stride);
    case 2:
      return RowDotK<F, 2>(w, n_blocks, act, act_stride, y, y_stride);
    case 3:
      return RowDotK<F, 3>(w, n_blocks, act, act_stride, y, y_stride);
    default:
      return RowDotK<F, 4>(w, n_blocks, act, act_stride, y, y_stride);
  }
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_ROW_DOT_X86_H_
