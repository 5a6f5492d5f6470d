// AVX-512 VNNI kernels for Q4_K, Q5_K and Q6_K weights in the striped layout
// (kernels/quant/interleave.h): lane i of every vector is row i of a 16-row stripe, a unit is
// one super-block column of the 16 rows. Q4_K's unit (2304 bytes): the packed scales as three
// 64-byte chunks of dwords, the 128 code bytes as 32 chunks, then d[16] and dmin[16]; Q5_K's
// (2816) has its qh bytes as 8 chunks between the scales and the codes; Q6_K's below
// StripeSeqsQ6.
//
// Q4_K (Q5_K: the same with each code's fifth bit or-ed in from qh): per unit the three scale
// chunks unpack, for all 16 rows at once, into each
// sub-block's 6-bit scale (an int32 per lane) and its mins as int16 pairs; each 4-byte code
// chunk gives through two masks four elements of sub-block 2p (low nibbles) and four of 2p + 1
// (high) for the 16 rows, which vpdpbusd multiplies by one sequence's four activation bytes
// broadcast to all lanes. Per sub-block the exact int32 dot times its scale (vpmulld) adds into
// the super-block's sumi; the mins' sum sum_j m_j * bsum_j comes from four vpdpwssd against the
// activation's per-32 sums, paired as int16. The float side is the canonical k-quant term of
// dot_kernels.h, 16 rows at a time:
//   t = fl(fl(d * d_a) * float(sumi)) - fl(fl(dmin * d_a) * float(summ)),  chain c += t,
// chain by chain (the units are stored in chain order), then the fixed tree over the chains.
// Nothing is reduced across lanes and a unit's unpacking serves up to kMaxSeqs sequences.
// Both kernels give the same bits as the scalar kernel (tests/kernels/interleave_test.cc).
//
// Single thread, Zen 4, 2048 x 2048 from cache (kernel_bench): batch 1 Q4_K 15 -> 54 GB/s of
// weights, Q6_K 22 -> 38; batch 16 Q4_K 202 -> 295 GFLOP/s, Q6_K even.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// GCC 12's 512-bit intrinsics pass an _mm512_undefined_*() operand as the unused merge source,
// and -Wmaybe-uninitialized reports it at every inlined use; nothing here reads one.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/gemm_ops_avx512vnni.h"
#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/interleave.h"
#include "kernels/quant/kquants.h"

namespace tessera {
namespace {

// Q4_K and Q5_K units: chunks 0..2 the scales' dwords, Q5_K's qh bytes as chunks 3..10, the
// qs bytes as 32 chunks from kCodeChunk0, then d[16] and, 32 bytes on, dmin[16].
template <bool k5>
struct UnitK {
  static constexpr int kBytes =
      kStripeRows * static_cast<int>(k5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
  static constexpr int kQhChunk0 = 3;
  static constexpr int kCodeChunk0 = k5 ? 11 : 3;
  static constexpr int kDOffset = kStripeRows * (k5 ? 172 : 140);
};
static_assert(UnitK<false>::kBytes == 2304 && UnitK<true>::kBytes == 2816, "interleave.h sizes");

// Bit b of each byte of v moved to bit 4 (the rest cleared).
inline __m512i BitTo4(__m512i v, int b) {
  const __m512i bit4 = _mm512_set1_epi8(0x10);
  if (b < 4) return _mm512_and_si512(_mm512_slli_epi16(v, 4 - b), bit4);
  if (b > 4) return _mm512_and_si512(_mm512_srli_epi16(v, b - 4), bit4);
  return _mm512_and_si512(v, bit4);
}

// Sequences per pass over a stripe (their sums, the unit's codes of one pair of sub-blocks,
// and the scales fit the 32 registers).
constexpr int kMaxSeqs = 4;
// As stripes_avx512vnni.cc: weight bytes every group of sequences passes over before the next
// stripes, the first pass's prefetch distance, and from how many sequences on it prefetches
// (Q6_K from one on: its 3360-byte units, half of them straddling cache lines, streamed from
// DRAM at 12 GB/s on 2 threads without software prefetches, 23 with, 35 once its chunks were
// stored in reading order; `kernel_bench`, 8192 x 2048 from DRAM).
constexpr int64_t kStripeGroupBytes = 128 * 1024;
constexpr int64_t kPrefetchAhead = 32 * 1024;
constexpr int kPrefetchMinSeqs = 2;

// One sequence's activation row: its super-blocks, and per super-block its sums paired as
// int16 for vpdpwssd (StripeRowsK says which).
struct SeqRow {
  const ActBlock256* blocks;
  const int32_t* sum_pairs;  // 4 (Q4_K, Q5_K) or 8 (Q6_K) per super-block
};

inline __m512i Bytes(__m512i v, int shift) {
  return _mm512_and_si512(_mm512_srli_epi32(v, shift), _mm512_set1_epi32(0xFF));
}

// The fixed tree over sequence b's eight chain sums of 16 rows, stored at y.
template <int NB>
void StoreCombined(const float (&chains)[kSumChains][NB][16], int b, float* y) {
  auto at = [&](int c) { return _mm512_load_ps(chains[c][b]); };
  const __m512 sum =
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(at(0), at(4)), _mm512_add_ps(at(2), at(6))),
                    _mm512_add_ps(_mm512_add_ps(at(1), at(5)), _mm512_add_ps(at(3), at(7))));
  _mm512_storeu_ps(y, sum);
}

// One Q4_K (k5 false) or Q5_K stripe against NB sequences: y[b * y_stride + i] for rows
// i < 16, b < NB. Q5_K's fifth bits: bit 2p of qh byte l is element 64 p + l's, bit 2p + 1
// element 64 p + 32 + l's, and qh chunk c holds bytes l = 4 c .. 4 c + 3 of each row.
template <bool k5, int NB>
void StripeSeqs(const uint8_t* stripe, int64_t n_blocks, const SeqRow* seqs, float* y,
                int64_t y_stride, bool prefetch) {
  alignas(64) float chains[kSumChains][NB][16];
  const uint8_t* unit = stripe;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t k = c; k < n_blocks; k += kSumChains, unit += UnitK<k5>::kBytes) {
      if (prefetch) {
        for (int o = 0; o < UnitK<k5>::kBytes; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(unit + kPrefetchAhead + o), _MM_HINT_T1);
        }
      }
      // The 16 rows' scales and mins (kquants_x86.h's ScalesMinsK4, a row per lane): bytes
      // 0..3 of sc_lo are sc0..sc3, of sc_hi sc4..sc7, likewise m_lo and m_hi.
      const __m512i w0 = _mm512_loadu_si512(unit), w1 = _mm512_loadu_si512(unit + 64),
                    w2 = _mm512_loadu_si512(unit + 128);
      const __m512i six = _mm512_set1_epi32(0x3f3f3f3f), four = _mm512_set1_epi32(0x0f0f0f0f),
                    top = _mm512_set1_epi32(0x30303030);
      const __m512i sc_lo = _mm512_and_si512(w0, six);
      const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(w2, four),
                                            _mm512_and_si512(_mm512_srli_epi32(w0, 2), top));
      const __m512i m_lo = _mm512_and_si512(w1, six);
      const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w2, 4), four),
                                           _mm512_and_si512(_mm512_srli_epi32(w1, 2), top));
      // The mins as int16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7).
      const __m512i pair_mask = _mm512_set1_epi32(0x00ff00ff);
      const __m512i mins[4] = {
          _mm512_and_si512(m_lo, pair_mask),
          _mm512_and_si512(_mm512_srli_epi32(m_lo, 8), pair_mask),
          _mm512_and_si512(m_hi, pair_mask),
          _mm512_and_si512(_mm512_srli_epi32(m_hi, 8), pair_mask),
      };
      __m512i sumi[NB];
      for (int b = 0; b < NB; ++b) sumi[b] = _mm512_setzero_si512();
      // Q5_K takes each sub-block pair's eight chunks in two parts of four, its fifth bits
      // adding to the registers the codes need (the dots then carry over between the parts).
      constexpr int kParts = k5 ? 2 : 1, kPer = 8 / kParts;
      for (int p = 0; p < 4; ++p) {
        const __m512i sc0 = Bytes(p < 2 ? sc_lo : sc_hi, 16 * (p % 2));
        const __m512i sc1 = Bytes(p < 2 ? sc_lo : sc_hi, 16 * (p % 2) + 8);
        __m512i d0[NB], d1[NB];
        for (int b = 0; b < NB; ++b) d0[b] = d1[b] = _mm512_setzero_si512();
        for (int part = 0; part < kParts; ++part) {
          // Chunk 8 p + c of the codes: code bytes 32 p + 4 c .. + 3 of each row, whose low
          // nibbles are elements 64 p + 4 c .. + 3 (sub-block 2 p) and high nibbles 64 p + 32 +
          // 4 c .. + 3 (sub-block 2 p + 1).
          __m512i lo[kPer], hi[kPer];
          for (int i = 0; i < kPer; ++i) {
            const int c8 = kPer * part + i;
            const __m512i z =
                _mm512_loadu_si512(unit + 64 * (UnitK<k5>::kCodeChunk0 + 8 * p + c8));
            lo[i] = _mm512_and_si512(z, low4);
            hi[i] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low4);
            if constexpr (k5) {
              const __m512i qh = _mm512_loadu_si512(unit + 64 * (UnitK<k5>::kQhChunk0 + c8));
              lo[i] = _mm512_or_si512(lo[i], BitTo4(qh, 2 * p));
              hi[i] = _mm512_or_si512(hi[i], BitTo4(qh, 2 * p + 1));
            }
          }
          for (int b = 0; b < NB; ++b) {
            const int8_t* q = seqs[b].blocks[k].qs + 64 * p + 4 * kPer * part;
            for (int i = 0; i < kPer; ++i) {
              d0[b] = Ops512::DotB(d0[b], lo[i], q + 4 * i);
              d1[b] = Ops512::DotB(d1[b], hi[i], q + 32 + 4 * i);
            }
          }
        }
        for (int b = 0; b < NB; ++b) {
          sumi[b] = _mm512_add_epi32(sumi[b], _mm512_add_epi32(_mm512_mullo_epi32(d0[b], sc0),
                                                               _mm512_mullo_epi32(d1[b], sc1)));
        }
      }
      const __m512 dw = _mm512_cvtph_ps(Load256(unit + UnitK<k5>::kDOffset));
      const __m512 dmin = _mm512_cvtph_ps(Load256(unit + UnitK<k5>::kDOffset + 32));
      for (int b = 0; b < NB; ++b) {
        const int32_t* pairs = seqs[b].sum_pairs + 4 * k;
        __m512i summ = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) {
          summ = _mm512_dpwssd_epi32(summ, mins[j], _mm512_set1_epi32(pairs[j]));
        }
        const __m512 da = _mm512_set1_ps(seqs[b].blocks[k].d);
        const __m512 t1 = Ops512::Opaque(
            _mm512_mul_ps(Ops512::Opaque(_mm512_mul_ps(dw, da)), _mm512_cvtepi32_ps(sumi[b])));
        const __m512 t2 = Ops512::Opaque(
            _mm512_mul_ps(Ops512::Opaque(_mm512_mul_ps(dmin, da)), _mm512_cvtepi32_ps(summ)));
        acc[b] = _mm512_add_ps(acc[b], _mm512_sub_ps(t1, t2));
      }
    }
    for (int b = 0; b < NB; ++b) _mm512_store_ps(chains[c][b], acc[b]);
  }
  for (int b = 0; b < NB; ++b) StoreCombined(chains, b, y + b * y_stride);
}

// Q6_K: a unit is 3360 bytes: the 16 int8 scales as chunks 0..3, then per half h and column
// group g = 2 h + c / 4 twelve chunks of codes, A and B (ql bytes 64 h + 4 c and 64 h + 32 +
// 4 c of the rows, c < 8) and H (qh bytes 32 h + 4 c) for the group's four columns c, then
// d[16] (interleave.h's StripeChunk): the kernel reads a unit front to back. A, B and H of
// column c give elements 128 h + 32 s + 4 c .. + 3 for s = 0..3 (kquant_decode.cc's
// DecodeQ6_K):
//   s = 0: A low nibbles | H bits 0-1 << 4,   s = 1: B low | H bits 2-3 << 2,
//   s = 2: A high | H bits 4-5,               s = 3: B high | H bits 6-7 >> 2,
// codes 0..63, the -32 of each returning as -32 sum_j sc_j bsum_j through four vpdpwssd per
// chunk pair of scales. Element group j = 8 h + 2 s + c / 4 of 16 has the int8 scale sc_j.
constexpr int kUnitBytesQ6 = kStripeRows * static_cast<int>(sizeof(BlockQ6_K));  // 3360
constexpr int kScaleChunk0 = 0, kCodeChunk0Q6 = 4, kDOffsetQ6 = kStripeRows * 208;
static_assert(kUnitBytesQ6 == 3360, "interleave.h sizes");

// Scale r (0..3) of each lane's dword of four int8 scales, sign-extended to int32.
inline __m512i Int8Lane(__m512i v, int r) {
  return _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * r), 24);
}

template <int NB>
void StripeSeqsQ6(const uint8_t* stripe, int64_t n_blocks, const SeqRow* seqs, float* y,
                  int64_t y_stride, bool prefetch) {
  alignas(64) float chains[kSumChains][NB][16];
  const uint8_t* unit = stripe;
  const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t k = c; k < n_blocks; k += kSumChains, unit += kUnitBytesQ6) {
      if (prefetch) {
        for (int o = 0; o < kUnitBytesQ6; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(unit + kPrefetchAhead + o), _MM_HINT_T1);
        }
      }
      __m512i sumi[NB];
      for (int b = 0; b < NB; ++b) sumi[b] = _mm512_setzero_si512();
      for (int h = 0; h < 2; ++h) {
        for (int half = 0; half < 2; ++half) {
          // Codes of chunk columns 4 half .. 4 half + 3, two s at a time (s = 2 sp, 2 sp + 1:
          // A and B's low nibbles, then their high ones), so that the codes, scales and the
          // sequences' sums fit the registers.
          const uint8_t* group = unit + 64 * (kCodeChunk0Q6 + 12 * (2 * h + half));
          for (int sp = 0; sp < 2; ++sp) {
            __m512i q[2][4];
            for (int cc = 0; cc < 4; ++cc) {
              const __m512i a = _mm512_loadu_si512(group + 64 * cc);
              const __m512i b = _mm512_loadu_si512(group + 64 * (4 + cc));
              const __m512i hb = _mm512_loadu_si512(group + 64 * (8 + cc));
              if (sp == 0) {
                q[0][cc] = _mm512_or_si512(_mm512_and_si512(a, low4),
                                           _mm512_and_si512(_mm512_slli_epi16(hb, 4), top2));
                q[1][cc] = _mm512_or_si512(_mm512_and_si512(b, low4),
                                           _mm512_and_si512(_mm512_slli_epi16(hb, 2), top2));
              } else {
                q[0][cc] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), low4),
                                           _mm512_and_si512(hb, top2));
                q[1][cc] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b, 4), low4),
                                           _mm512_and_si512(_mm512_srli_epi16(hb, 2), top2));
              }
            }
            // sc_j for j = 8 h + 2 s + half: chunk j / 4, byte j % 4.
            __m512i sc[2];
            for (int i = 0; i < 2; ++i) {
              const int j = 8 * h + 2 * (2 * sp + i) + half;
              sc[i] = Int8Lane(_mm512_loadu_si512(unit + 64 * (kScaleChunk0 + j / 4)), j % 4);
            }
            for (int b = 0; b < NB; ++b) {
              const int8_t* x = seqs[b].blocks[k].qs + 128 * h + 16 * half + 64 * sp;
              for (int i = 0; i < 2; ++i) {
                __m512i d = _mm512_setzero_si512();
                for (int cc = 0; cc < 4; ++cc) {
                  d = Ops512::DotB(d, q[i][cc], x + 32 * i + 4 * cc);
                }
                sumi[b] = _mm512_add_epi32(sumi[b], _mm512_mullo_epi32(d, sc[i]));
              }
            }
          }
        }
      }
      // The scales as int16 pairs (sc_4m, sc_4m+2) and (sc_4m+1, sc_4m+3) per chunk m.
      __m512i pairs[8];
      for (int m = 0; m < 4; ++m) {
        const __m512i v = _mm512_loadu_si512(unit + 64 * (kScaleChunk0 + m));
        pairs[2 * m] = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8);
        pairs[2 * m + 1] = _mm512_srai_epi16(v, 8);
      }
      const __m512 dw = _mm512_cvtph_ps(Load256(unit + kDOffsetQ6));
      for (int b = 0; b < NB; ++b) {
        const int32_t* bs = seqs[b].sum_pairs + 8 * k;
        __m512i offset = _mm512_setzero_si512();
        for (int j = 0; j < 8; ++j) {
          offset = _mm512_dpwssd_epi32(offset, pairs[j], _mm512_set1_epi32(bs[j]));
        }
        const __m512i total = _mm512_sub_epi32(sumi[b], _mm512_slli_epi32(offset, 5));
        const __m512 da = _mm512_set1_ps(seqs[b].blocks[k].d);
        // The canonical term's second product is +0 for Q6_K: leaving it out changes no bits
        // (dot_kernels.h).
        acc[b] = _mm512_add_ps(acc[b], Ops512::Opaque(_mm512_mul_ps(
                                           Ops512::Opaque(_mm512_mul_ps(dw, da)),
                                           _mm512_cvtepi32_ps(total))));
      }
    }
    for (int b = 0; b < NB; ++b) _mm512_store_ps(chains[c][b], acc[b]);
  }
  for (int b = 0; b < NB; ++b) StoreCombined(chains, b, y + b * y_stride);
}

using StripeSeqsFn = void (*)(const uint8_t*, int64_t, const SeqRow*, float*, int64_t, bool);

template <GgmlType kType, int NB = kMaxSeqs>
StripeSeqsFn SelectSeqs(int nb) {
  if constexpr (NB > 1) {
    if (nb < NB) return SelectSeqs<kType, NB - 1>(nb);
  }
  if constexpr (kType == GgmlType::kQ6_K) {
    return StripeSeqsQ6<NB>;
  } else {
    return StripeSeqs<kType == GgmlType::kQ5_K, NB>;
  }
}

// Two int16 values as one dword (a low, b high), vpdpwssd's pair.
inline int32_t Pair(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint16_t>(a) |
                              static_cast<uint32_t>(static_cast<uint16_t>(b)) << 16);
}

// StripeRowsFn (dot_kernels.h) for Q4_K, Q5_K or Q6_K.
template <GgmlType kType>
void StripeRowsK(const uint8_t* w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                 int64_t n_blocks, const uint8_t* act, int64_t act_stride, int64_t n_batch,
                 float* y, int64_t y_stride) {
  // Each sequence's activation sums, paired as the kernels take them (once per call): Q4_K's
  // and Q5_K's per-32 sums s_j as (s0, s2), (s1, s3), (s4, s6), (s5, s7); Q6_K's per-16 bsums as
  // (b_4m, b_4m+2), (b_4m+1, b_4m+3) for m = 0..3.
  constexpr bool kQ6 = kType == GgmlType::kQ6_K;
  constexpr int kPairs = kQ6 ? 8 : 4;
  thread_local std::vector<int32_t> pairs;
  pairs.resize(static_cast<size_t>(n_batch * n_blocks * kPairs));
  for (int64_t b = 0; b < n_batch; ++b) {
    const auto* blocks = reinterpret_cast<const ActBlock256*>(act + b * act_stride);
    for (int64_t k = 0; k < n_blocks; ++k) {
      const int16_t* bs = blocks[k].bsums;
      int32_t* out = pairs.data() + (b * n_blocks + k) * kPairs;
      if constexpr (kQ6) {
        for (int m = 0; m < 4; ++m) {
          out[2 * m] = Pair(bs[4 * m], bs[4 * m + 2]);
          out[2 * m + 1] = Pair(bs[4 * m + 1], bs[4 * m + 3]);
        }
      } else {
        int32_t s[8];
        for (int j = 0; j < 8; ++j) s[j] = bs[2 * j] + bs[2 * j + 1];
        for (int j = 0; j < 4; ++j) {
          const int lo = j < 2 ? j : j + 2;
          out[j] = Pair(s[lo], s[lo + 2]);
        }
      }
    }
  }
  const int64_t stripe_bytes = kStripeRows * row_bytes;
  const int64_t group_rows = kStripeRows * std::max<int64_t>(1, kStripeGroupBytes / stripe_bytes);
  for (int64_t g0 = row_begin; g0 < row_end; g0 += group_rows) {
    const int64_t g1 = std::min(row_end, g0 + group_rows);
    for (int64_t b0 = 0; b0 < n_batch; b0 += kMaxSeqs) {
      const int nb = static_cast<int>(std::min<int64_t>(kMaxSeqs, n_batch - b0));
      SeqRow seqs[kMaxSeqs];
      for (int b = 0; b < nb; ++b) {
        seqs[b] = {reinterpret_cast<const ActBlock256*>(act + (b0 + b) * act_stride),
                   pairs.data() + (b0 + b) * n_blocks * kPairs};
      }
      const StripeSeqsFn fn = SelectSeqs<kType>(nb);
      for (int64_t r = g0; r < g1; r += kStripeRows) {
        fn(w + r * row_bytes, n_blocks, seqs, y + b0 * y_stride + r, y_stride,
           /*prefetch=*/b0 == 0 && (kQ6 || nb >= kPrefetchMinSeqs));
      }
    }
  }
}

}  // namespace

StripeRowsFn Avx512VnniKQuantStripeRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_K:
      return StripeRowsK<GgmlType::kQ4_K>;
    case GgmlType::kQ5_K:
      return StripeRowsK<GgmlType::kQ5_K>;
    case GgmlType::kQ6_K:
      return StripeRowsK<GgmlType::kQ6_K>;
    default:
      return nullptr;
  }
}

}  // namespace tessera
