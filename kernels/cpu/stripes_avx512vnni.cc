// AVX-512 VNNI kernels for Q4_0, Q4_1 and Q8_0 weights in the striped layout
// (kernels/quant/interleave.h), the CPU backend's layout for them on AVX-512 VNNI without AMX.
//
// Lane i of every vector is row i of a 16-row stripe. Per unit (one block column of the 16
// rows): four loads and eight masks (Q8_0: eight loads and eight xors) give the eight
// 4-element groups of all 16 rows, and for
// each sequence of the batch eight vpdpbusd multiply them by that sequence's four activation
// bytes of the group, broadcast from memory: the 16 rows' exact block dots, already one per
// lane. The float side is the canonical term of dot_kernels.h, 16 rows at a time:
//   t = fl(fl(d_w * d_a) * float(dot)) + fl(off_w * ds),  chain c += t,
// chain by chain (the units are stored in chain order), then the fixed tree over the eight
// chains, and the 16 results are one store per sequence. Nothing is reduced across lanes and
// nothing is decoded into a buffer, so the unpacking of a unit is shared by every sequence of
// the batch (up to 8 per pass over the stripe, the accumulators of more would not fit the 32
// registers). Results equal every other kernel's bit for bit (tests/kernels/stripes_test.cc).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

// GCC 12's 512-bit intrinsics pass an _mm512_undefined_*() operand as the unused merge source,
// and -Wmaybe-uninitialized reports it at every inlined use; nothing here reads one.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/gemm_ops_avx512vnni.h"
#include "kernels/quant/interleave.h"

namespace tessera {
namespace {

// Sequences per pass over a stripe.
constexpr int kMaxSeqs = 8;
// Weight bytes of the stripes that every group of kMaxSeqs sequences passes over before the
// next stripes (they stay in L2 between the passes).
constexpr int64_t kStripeGroupBytes = 128 * 1024;
// How far ahead of the unit being read the first pass prefetches (as the row-dot kernels), and
// from how many sequences on. One sequence streams the weights with so little work per unit
// that the hardware prefetchers keep up, and the prefetch instructions only cost: without them
// decode of 1 sequence ran 8-12% faster (1B Q4_0, SmolLM2; medians of 6 alternating runs).
// From 4 sequences on the work per unit hides the memory latency only with them (1B Q4_0:
// batch 4 95 -> 168 tok/s, batch 16 152 -> 202 with them); 2 sequences are even.
constexpr int64_t kPrefetchAhead = 32 * 1024;
constexpr int kPrefetchMinSeqs = 2;

// A block format F of block32_avx512vnni.h in the striped layout: the unit's bytes, where its
// fields are, and its eight groups as vpdpbusd's unsigned operand.
template <typename F>
struct Striped {
  using Block = F;
  static constexpr bool kFourBit = F::kBytes != sizeof(BlockQ8_0);
  static constexpr int kUnitBytes = kStripeRows * F::kBytes;
  static constexpr int kCodeBytes = kFourBit ? 256 : 512;
  // Where the unit keeps the offset field's 16 fp16 values (Q4_0: d, Q4_1: m).
  static constexpr int kFieldOffset = kCodeBytes + 16 * F::kOffsetField;
  // Group g of all 16 rows (lane i: elements 4 g .. 4 g + 3 of row i), as unsigned bytes: the
  // nibbles, or Q8_0's codes + 128 (F::kCodeBias).
  static void Groups(const uint8_t* unit, __m512i (&codes)[8]) {
    if constexpr (kFourBit) {
      const __m512i low = _mm512_set1_epi8(0x0F);
      for (int j = 0; j < 4; ++j) {
        const __m512i z = _mm512_loadu_si512(unit + 64 * j);
        codes[j] = _mm512_and_si512(z, low);
        codes[j + 4] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low);
      }
    } else {
      const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
      for (int g = 0; g < 8; ++g) {
        codes[g] = _mm512_xor_si512(_mm512_loadu_si512(unit + 64 * g), flip);
      }
    }
  }
};
static_assert(Striped<Q4_0>::kUnitBytes == 288 && Striped<Q4_0>::kFieldOffset == 256,
              "interleave.h sizes");
static_assert(Striped<Q4_1>::kUnitBytes == 320 && Striped<Q4_1>::kFieldOffset == 288,
              "interleave.h sizes");
static_assert(Striped<Q8_0>::kUnitBytes == 544 && Striped<Q8_0>::kCodeBytes == 512,
              "interleave.h sizes");

// The canonical term of one block and its addition to the chain: acc + (scale * dot + off),
// scale = fl(d_w * d_a) and off = fl(off_w * ds) already rounded.
template <bool kOffset>
__m512 AddTerm(__m512 acc, __m512 scale, __m512i dot, __m512 off) {
  __m512 t = Ops512::Opaque(_mm512_mul_ps(scale, Ops512::Cvt(dot)));
  if constexpr (kOffset) t = _mm512_add_ps(t, off);
  return _mm512_add_ps(acc, t);
}

// One stripe against NB sequences: y[b * y_stride + i] for rows i < 16, b < NB.
//
// With fewer than 4 sequences (memory-bound) a unit is read in address order, its codes and then
// its scale fields, and its float step (AddTerm) runs one unit late, after the next unit's
// integer dots. One core streamed Q8_0 at ~0.7 of its plain read bandwidth with the fields
// read first (where the compiler put them) or with the step on time, ~1.0 with both changes
// (a single-core model of this loop, medians of 30 alternating passes, 2026-12-07, fifth
// session). The chain starts with a step of zeros, which adds +0 to +0: the same bits.
template <typename S, int NB>
void StripeSeqs(const uint8_t* stripe, int64_t n_blocks, const ActRow32* a, float* y,
                int64_t y_stride, bool prefetch) {
  using F = typename S::Block;
  constexpr bool kOffset = F::kOffsetFactor != 0.0f;
  constexpr bool kLate = NB < 4;
  alignas(64) float chains[kSumChains][NB][16];
  const uint8_t* unit = stripe;
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[NB];
    // The previous unit's dots and factors (kLate).
    __m512i late_dot[NB];
    __m512 late_scale[NB], late_off[NB];
    for (int b = 0; b < NB; ++b) {
      acc[b] = late_scale[b] = late_off[b] = _mm512_setzero_ps();
      late_dot[b] = _mm512_setzero_si512();
    }
    for (int64_t k = c; k < n_blocks; k += kSumChains, unit += S::kUnitBytes) {
      if (prefetch) {
        for (int o = 0; o < S::kUnitBytes; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(unit + kPrefetchAhead + o), _MM_HINT_T1);
        }
      }
      __m512i codes[8];  // group g: elements 4 g .. 4 g + 3 of the 16 rows
      S::Groups(unit, codes);
      // Sequence b's exact block dots of the 16 rows.
      auto dot_of = [&](int b) {
        const int8_t* q = a[b].qs + 32 * k;
        // The code bias comes back exactly: F::kCodeBias * sum(a) of the block.
        const __m512i seed = F::kCodeBias != 0 ? _mm512_set1_epi32(-F::kCodeBias * a[b].sum[k])
                                               : _mm512_setzero_si512();
        if constexpr (NB < 4) {
          // Two chains of vpdpbusd: with few sequences the latency of one would show.
          __m512i d0 = seed, d1 = _mm512_setzero_si512();
          for (int g = 0; g < 8; g += 2) {
            d0 = Ops512::DotB(d0, codes[g], q + 4 * g);
            d1 = Ops512::DotB(d1, codes[g + 1], q + 4 * g + 4);
          }
          return _mm512_add_epi32(d0, d1);
        } else {
          __m512i dot = seed;
          for (int g = 0; g < 8; ++g) dot = Ops512::DotB(dot, codes[g], q + 4 * g);
          return dot;
        }
      };
      __m512i dots[NB];
      if constexpr (kLate) {
        for (int b = 0; b < NB; ++b) dots[b] = dot_of(b);
        // The unit's scale fields are read after its codes, in the order of their addresses
        // (the compiler would hoist them; see above).
        __asm__ volatile("" ::: "memory");
      }
      const __m512 dw = _mm512_cvtph_ps(Load256(unit + S::kCodeBytes));
      __m512 off = _mm512_setzero_ps();
      if constexpr (kOffset) {
        // Exact: the factor is 1 or -8.
        off = _mm512_mul_ps(_mm512_set1_ps(F::kOffsetFactor),
                            _mm512_cvtph_ps(Load256(unit + S::kFieldOffset)));
      }
      for (int b = 0; b < NB; ++b) {
        __m512i dot;
        if constexpr (kLate) {
          dot = dots[b];
        } else {
          dot = dot_of(b);
        }
        const __m512 scale = Ops512::Opaque(_mm512_mul_ps(dw, _mm512_set1_ps(a[b].d[k])));
        __m512 off_term = _mm512_setzero_ps();
        if constexpr (kOffset) {
          off_term = Ops512::Opaque(_mm512_mul_ps(off, _mm512_set1_ps(a[b].ds[k])));
        }
        if constexpr (kLate) {
          acc[b] = AddTerm<kOffset>(acc[b], late_scale[b], late_dot[b], late_off[b]);
          late_dot[b] = dot;
          late_scale[b] = scale;
          late_off[b] = off_term;
        } else {
          acc[b] = AddTerm<kOffset>(acc[b], scale, dot, off_term);
        }
      }
    }
    for (int b = 0; b < NB; ++b) {
      if constexpr (kLate) {
        acc[b] = AddTerm<kOffset>(acc[b], late_scale[b], late_dot[b], late_off[b]);
      }
      _mm512_store_ps(chains[c][b], acc[b]);
    }
  }
  for (int b = 0; b < NB; ++b) {
    auto at = [&](int c) { return _mm512_load_ps(chains[c][b]); };
    const __m512 sum =
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(at(0), at(4)), _mm512_add_ps(at(2), at(6))),
                      _mm512_add_ps(_mm512_add_ps(at(1), at(5)), _mm512_add_ps(at(3), at(7))));
    _mm512_storeu_ps(y + b * y_stride, sum);
  }
}

template <typename S>
using StripeSeqsFn = void (*)(const uint8_t*, int64_t, const ActRow32*, float*, int64_t, bool);

template <typename S, int NB = kMaxSeqs>
StripeSeqsFn<S> SelectSeqs(int nb) {
  if constexpr (NB > 1) {
    if (nb < NB) return SelectSeqs<S, NB - 1>(nb);
  }
  return StripeSeqs<S, NB>;
}

// StripeRowsFn (dot_kernels.h).
template <typename S>
void StripeRowsOf(const uint8_t* w, int64_t row_bytes, int64_t row_begin, int64_t row_end,
                  int64_t n_blocks, const uint8_t* act, int64_t act_stride, int64_t n_batch,
                  float* y, int64_t y_stride) {
  const int64_t stripe_bytes = kStripeRows * row_bytes;
  const int64_t group_rows = kStripeRows * std::max<int64_t>(1, kStripeGroupBytes / stripe_bytes);
  for (int64_t g0 = row_begin; g0 < row_end; g0 += group_rows) {
    const int64_t g1 = std::min(row_end, g0 + group_rows);
    for (int64_t b0 = 0; b0 < n_batch; b0 += kMaxSeqs) {
      const int nb = static_cast<int>(std::min<int64_t>(kMaxSeqs, n_batch - b0));
      ActRow32 a[kMaxSeqs];
      for (int b = 0; b < nb; ++b) a[b] = ViewActRow32(act + (b0 + b) * act_stride, n_blocks);
      const StripeSeqsFn<S> fn = SelectSeqs<S>(nb);
      for (int64_t r = g0; r < g1; r += kStripeRows) {
        fn(w + r * row_bytes, n_blocks, a, y + b0 * y_stride + r, y_stride,
           /*prefetch=*/b0 == 0 && nb >= kPrefetchMinSeqs);
      }
    }
  }
}

}  // namespace

void UnstripeRowsAvx512(GgmlType type, const uint8_t* stripe, int64_t n_blocks, uint8_t* dst,
                        int64_t dst_stride) {
  const StripeBlockLayout b = GetStripeBlockLayout(type);
  const int64_t unit_bytes = int64_t{kStripeRows} * b.block_bytes;
  const int fields_at = kStripeRows * 4 * b.code_pieces;
  int chunk[64];
  for (int c = 0; c < b.code_pieces; ++c) chunk[c] = StripeChunk(type, c);
  for (int64_t k = 0; k < n_blocks; ++k) {
    const uint8_t* unit = stripe + StripeSlot(k, n_blocks) * unit_bytes;
    uint8_t* block = dst + k * b.block_bytes + b.code_start;
    int c = 0;
    // Sixteen chunks (pieces c .. c + 15 of the 16 rows) transposed: row i's 64 bytes.
    for (; c + 16 <= b.code_pieces; c += 16) {
      __m512i a[16], t[16];
      for (int j = 0; j < 16; ++j) a[j] = _mm512_loadu_si512(unit + 64 * chunk[c + j]);
      for (int j = 0; j < 16; j += 2) {
        t[j] = _mm512_unpacklo_epi32(a[j], a[j + 1]);
        t[j + 1] = _mm512_unpackhi_epi32(a[j], a[j + 1]);
      }
      for (int j = 0; j < 16; j += 4) {
        a[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
        a[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
        a[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
        a[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
      }
      for (int j = 0; j < 16; j += 8) {
        for (int x = 0; x < 4; ++x) {
          t[j + x] = _mm512_shuffle_i32x4(a[j + x], a[j + x + 4], 0x88);
          t[j + x + 4] = _mm512_shuffle_i32x4(a[j + x], a[j + x + 4], 0xdd);
        }
      }
      for (int x = 0; x < 8; ++x) {
        _mm512_storeu_si512(block + x * dst_stride + 4 * c,
                            _mm512_shuffle_i32x4(t[x], t[x + 8], 0x88));
        _mm512_storeu_si512(block + (x + 8) * dst_stride + 4 * c,
                            _mm512_shuffle_i32x4(t[x], t[x + 8], 0xdd));
      }
    }
    for (; c < b.code_pieces; ++c) {
      for (int i = 0; i < kStripeRows; ++i) {
        std::memcpy(block + i * dst_stride + 4 * c, unit + 64 * chunk[c] + 4 * i, 4);
      }
    }
    uint8_t* fields = dst + k * b.block_bytes + b.field_start;
    for (int f = 0; f < b.fields; ++f) {
      for (int i = 0; i < kStripeRows; ++i) {
        std::memcpy(fields + i * dst_stride + 2 * f, unit + fields_at + 32 * f + 2 * i, 2);
      }
    }
  }
}

StripeRowsFn Avx512VnniStripeRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return StripeRowsOf<Striped<Q4_0>>;
    case GgmlType::kQ4_1:
      return StripeRowsOf<Striped<Q4_1>>;
    case GgmlType::kQ8_0:
      return StripeRowsOf<Striped<Q8_0>>;
    default:
      return Avx512VnniKQuantStripeRows(type);
  }
}

}  // namespace tessera
