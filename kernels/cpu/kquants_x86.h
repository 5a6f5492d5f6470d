// The k-quant formats (Q2_K..Q6_K) for the x86 kernel files, against ActBlock256 activations.
// Internal linkage on purpose, like simd_x86.h. Each format is a template on `Ops`, which
// supplies the one step that differs between instruction sets:
//   Ops::AddScaledDot(sumi, codes, a, sc) = sumi + sum over 32 elements of codes * a * sc,
// codes unsigned bytes (<= 63), a int8, sc the int16 scale of each element's sub-block.
//
// Trick: per 32 elements, the weight codes times the int8 activations go through vpmaddubsw
// into 16 int16 pair sums (|sum| <= 2 * 63 * 127, no saturation); a multiply-add of int16
// pairs with a vector holding each pair's sub-block scale then applies the integer scales and
// widens to int32, accumulated exactly as the scalar kernel's sum_j sc_j * dot_j. Offsets that
// do not depend on the element (Q3_K's -4 and Q6_K's -32 left out of the codes, the mins of
// Q2_K/Q4_K/Q5_K) are applied once per super-block from the activations' per-16 sums: e.g.
// sum_j sc_j * (q - 32) . a = sum_j sc_j * (q . a) - 32 * sum_j sc_j * bsum_j. The lanes are
// then summed as integers, so each super-block yields the scalar kernel's exact sumi and summ,
// and its float term is the canonical one of dot_kernels.h: equal to kquants_scalar.cc bit for
// bit.
#ifndef TESSERA_KERNELS_CPU_KQUANTS_X86_H_
#define TESSERA_KERNELS_CPU_KQUANTS_X86_H_

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/row_dot_x86.h"
#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/kquants.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

// scales_twice holds the same eight int16 scales in both 128-bit halves. Returns scale k0 in
// the eight low int16 lanes and scale k1 in the eight high ones (one vpshufb).
inline __m256i PickScales(__m256i scales_twice, int k0, int k1) {
  const int lo = (2 * k0) | (2 * k0 + 1) << 8, hi = (2 * k1) | (2 * k1 + 1) << 8;
  const __m256i ctrl =
      _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
  return _mm256_shuffle_epi8(scales_twice, ctrl);
}

inline __m256i Twice(__m128i v) { return _mm256_broadcastsi128_si256(v); }

// Scales (and mins) of Q4_K / Q5_K: eight 6-bit values each, packed in 12 bytes (see
// kquants.h). Returns sc0..7 in bytes 0..7 and m0..7 in bytes 8..15.
inline __m128i ScalesMinsK4(const uint8_t* packed) {
  const uint32_t w0 = LoadU32(packed), w1 = LoadU32(packed + 4), w2 = LoadU32(packed + 8);
  const uint32_t sc_lo = w0 & 0x3f3f3f3fu, m_lo = w1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u);
  const uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo),
                        static_cast<int>(m_hi));
}

// Scales of Q3_K: sixteen 6-bit values in 12 bytes, minus 32, as int8. Low four bits: byte j
// (j < 8) low nibble or byte j - 8 high nibble; top two bits: byte 8 + j % 4, bits 2 (j / 4).
inline __m128i ScalesQ3_K(const uint8_t* packed) {
  const uint32_t w0 = LoadU32(packed), w1 = LoadU32(packed + 4), w2 = LoadU32(packed + 8);
  const uint32_t s0 = (w0 & 0x0f0f0f0fu) | ((w2 << 4) & 0x30303030u);
  const uint32_t s1 = (w1 & 0x0f0f0f0fu) | ((w2 << 2) & 0x30303030u);
  const uint32_t s2 = ((w0 >> 4) & 0x0f0f0f0fu) | (w2 & 0x30303030u);
  const uint32_t s3 = ((w1 >> 4) & 0x0f0f0f0fu) | ((w2 >> 2) & 0x30303030u);
  const __m128i s = _mm_setr_epi32(static_cast<int>(s0), static_cast<int>(s1), static_cast<int>(s2),
                                   static_cast<int>(s3));
  return _mm_sub_epi8(s, _mm_set1_epi8(32));
}

// One super-block of one format against NA activation rows. Dot fills, per row, int32 lanes
// that sum exactly to the super-block's sumi (and, for the formats with mins, summ) of the
// canonical term (dot_kernels.h), plus the super-block's scales; row_dot_x86.h's RowDotK
// reduces eight super-blocks' lanes at once and does the float work eight lanes wide (KSums is
// declared there).
template <int NA>
using Acts = const ActBlock256* const (&)[NA];

template <typename Ops>
struct Q2_K {
  using Block = BlockQ2_K;
  static constexpr bool kMins = true;
  template <int NA>
  static void Dot(const uint8_t* w, Acts<NA> a, KSums<NA>* out) {
    const __m128i packed = Load128(w + offsetof(BlockQ2_K, scales));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    // sc_j and m_j (j = 0..15) as int16, each 128-bit half holding 8 of them.
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
    __m256i sumi[NA];
    for (int b = 0; b < NA; ++b) sumi[b] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = Load256(w + offsetof(BlockQ2_K, qs) + 32 * h);
      const __m256i sc_twice =
          h == 0 ? Twice(_mm256_castsi256_si128(sc16)) : Twice(_mm256_extracti128_si256(sc16, 1));
      for (int s = 0; s < 4; ++s) {
        // Elements 128 h + 32 s + l are bits 2s..2s+1 of qs[32 h + l]: sub-blocks 2s, 2s+1.
        const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), _mm256_set1_epi8(3));
        const __m256i sc = PickScales(sc_twice, 2 * s, 2 * s + 1);
        for (int b = 0; b < NA; ++b) {
          sumi[b] = Ops::AddScaledDot(sumi[b], codes, a[b]->qs + 128 * h + 32 * s, sc);
        }
      }
    }
    const float d = LoadFp16(w + offsetof(BlockQ2_K, d));
    const float dmin = LoadFp16(w + offsetof(BlockQ2_K, dmin));
    out->d = d;
    out->dmin = dmin;
    for (int b = 0; b < NA; ++b) {
      const __m256i mins = _mm256_madd_epi16(Load256(a[b]->bsums), m16);
      out->sumi[b] = sumi[b];
      out->mins[b] = mins;
    }
  }
};

template <typename Ops>
struct Q3_K {
  using Block = BlockQ3_K;
  static constexpr bool kMins = false;
  template <int NA>
  static void Dot(const uint8_t* w, Acts<NA> a, KSums<NA>* out) {
    // Codes as q + 4 = low bits + 4 * high bit, in 0..7; the -4 returns through bsums.
    const __m256i sc16 = _mm256_cvtepi8_epi16(ScalesQ3_K(w + offsetof(BlockQ3_K, scales)));
    __m256i hbits = Load256(w + offsetof(BlockQ3_K, hmask));
    __m256i sumi[NA];
    for (int b = 0; b < NA; ++b) sumi[b] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = Load256(w + offsetof(BlockQ3_K, qs) + 32 * h);
      const __m256i sc_twice =
          h == 0 ? Twice(_mm256_castsi256_si128(sc16)) : Twice(_mm256_extracti128_si256(sc16, 1));
      for (int s = 0; s < 4; ++s) {
        // High bit of element 128 h + 32 s + l: bit 4 h + s of hmask[l]; hbits is shifted
        // right once per group so that bit is always bit 0 of each byte.
        const __m256i high = _mm256_and_si256(_mm256_slli_epi16(hbits, 2), _mm256_set1_epi8(4));
        hbits = _mm256_srli_epi16(hbits, 1);
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), _mm256_set1_epi8(3));
        const __m256i codes = _mm256_or_si256(low, high);
        const __m256i sc = PickScales(sc_twice, 2 * s, 2 * s + 1);
        for (int b = 0; b < NA; ++b) {
          sumi[b] = Ops::AddScaledDot(sumi[b], codes, a[b]->qs + 128 * h + 32 * s, sc);
        }
      }
    }
    const float d = LoadFp16(w + offsetof(BlockQ3_K, d));
    out->d = d;
    for (int b = 0; b < NA; ++b) {
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(Load256(a[b]->bsums), sc16), 2);
      const __m256i total = _mm256_sub_epi32(sumi[b], offset);
      out->sumi[b] = total;
    }
  }
};

// Q4_K and Q5_K share everything but the fifth bit.
template <typename Ops, bool kFiveBits>
struct Q45_K {
  using Block = std::conditional_t<kFiveBits, BlockQ5_K, BlockQ4_K>;
  static constexpr bool kMins = true;
  template <int NA>
  static void Dot(const uint8_t* w, Acts<NA> a, KSums<NA>* out) {
    const __m128i scmin = ScalesMinsK4(w + offsetof(Block, scales));
    const __m256i sc_twice = Twice(_mm_cvtepu8_epi16(scmin));
    // m_j for each pair of 16 (the bsums' granularity): m0 m0 m1 m1 ... m7 m7.
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_srli_si128(scmin, 8));
    const __m256i m16 = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    const uint8_t* qs = w + offsetof(Block, qs);
    __m256i hbits = _mm256_setzero_si256();
    if constexpr (kFiveBits) hbits = Load256(w + offsetof(BlockQ5_K, qh));
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    // Two integer chains per row (even and odd sub-blocks) halve the dependent latency.
    __m256i sumi[NA], sumi_odd[NA];
    for (int b = 0; b < NA; ++b) sumi[b] = sumi_odd[b] = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p) {
      // qs[32 p + l]: element 64 p + l (sub-block 2p) low, 64 p + 32 + l (2p + 1) high.
      const __m256i q = Load256(qs + 32 * p);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kFiveBits) {
        // Bits 2p and 2p + 1 of qh[l]; hbits shifts right by 2 per pair so they sit at 0, 1.
        const __m256i bit4 = _mm256_set1_epi8(0x10);
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hbits, 4), bit4));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hbits, 3), bit4));
        hbits = _mm256_srli_epi16(hbits, 2);
      }
      const __m256i sc_lo = PickScales(sc_twice, 2 * p, 2 * p);
      const __m256i sc_hi = PickScales(sc_twice, 2 * p + 1, 2 * p + 1);
      for (int b = 0; b < NA; ++b) {
        sumi[b] = Ops::AddScaledDot(sumi[b], lo, a[b]->qs + 64 * p, sc_lo);
        sumi_odd[b] = Ops::AddScaledDot(sumi_odd[b], hi, a[b]->qs + 64 * p + 32, sc_hi);
      }
    }
    for (int b = 0; b < NA; ++b) sumi[b] = _mm256_add_epi32(sumi[b], sumi_odd[b]);
    const float d = LoadFp16(w + offsetof(Block, d));
    const float dmin = LoadFp16(w + offsetof(Block, dmin));
    out->d = d;
    out->dmin = dmin;
    for (int b = 0; b < NA; ++b) {
      const __m256i mins = _mm256_madd_epi16(Load256(a[b]->bsums), m16);
      out->sumi[b] = sumi[b];
      out->mins[b] = mins;
    }
  }
};

template <typename Ops>
struct Q6_K {
  using Block = BlockQ6_K;
  static constexpr bool kMins = false;
  template <int NA>
  static void Dot(const uint8_t* w, Acts<NA> a, KSums<NA>* out) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(Load128(w + offsetof(BlockQ6_K, scales)));
    const __m256i m4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
    __m256i sumi[NA];
    for (int b = 0; b < NA; ++b) sumi[b] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w + offsetof(BlockQ6_K, ql) + 64 * h;
      const __m256i ql0 = Load256(ql), ql1 = Load256(ql + 32);
      const __m256i qh = Load256(w + offsetof(BlockQ6_K, qh) + 32 * h);
      // Elements 128 h + {0, 32, 64, 96} + l, codes 0..63 (the -32 returns through bsums).
      const __m256i codes[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, m4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2)),
          _mm256_or_si256(_mm256_and_si256(ql1, m4),
                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                          _mm256_and_si256(qh, top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2)),
      };
      const __m256i sc_twice =
          h == 0 ? Twice(_mm256_castsi256_si128(sc16)) : Twice(_mm256_extracti128_si256(sc16, 1));
      for (int s = 0; s < 4; ++s) {
        const __m256i sc = PickScales(sc_twice, 2 * s, 2 * s + 1);
        for (int b = 0; b < NA; ++b) {
          sumi[b] = Ops::AddScaledDot(sumi[b], codes[s], a[b]->qs + 128 * h + 32 * s, sc);
        }
      }
    }
    const float d = LoadFp16(w + offsetof(BlockQ6_K, d));
    out->d = d;
    for (int b = 0; b < NA; ++b) {
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(Load256(a[b]->bsums), sc16), 5);
      const __m256i total = _mm256_sub_epi32(sumi[b], offset);
      out->sumi[b] = total;
    }
  }
};

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_KQUANTS_X86_H_
