// AVX-512 VNNI row-dot kernels for Q4_0 and Q4_1 rows in the interleaved layout
// (kernels/quant/interleave.h), which the CPU backend stores these weights in.
//
// Per group of eight blocks: two 512-bit loads give the codes of four blocks each (one mask,
// one shift and mask), and each vpdpbusd multiplies two blocks' 64 codes by the matching 64
// contiguous activation bytes. The four 16-lane products are reduced to one lane per block by
// lane shuffles (8 shuffles for 8 blocks, where the GGUF layout's kernel needs 7 vphaddd and 2
// permutes, 16 shuffles), and the eight scales load as one vector instead of being gathered
// from eight blocks. About a third of the GGUF kernel's instructions per byte: at batch 1 it
// keeps up with the memory bandwidth where the GGUF one falls behind it (bench/RESULTS.md).
// The integer block dots are exact and the float side is row_dot_x86.h's AddBlockTerms, so
// results equal every other kernel's bit for bit (tests/kernels/interleave_test.cc).
#include <immintrin.h>

#include <cstdint>

// GCC 12's 512-bit shuffle intrinsics pass an _mm512_undefined_*() operand (a self-initialised
// variable) as the unused merge source, and -Wmaybe-uninitialized reports it at every inlined
// use; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/row_dot_x86.h"
#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/interleave.h"

namespace tessera {
namespace {

// An interleaved format: the GGUF block format F (its scale arithmetic and its tail blocks),
// the group's bytes, and where the group keeps the eight fp16 values of the offset field:
// after the 128 code bytes, field f (d = 0, m = 1) at 128 + 16 f.
template <typename F>
struct Interleaved {
  using Block = F;
  static constexpr int kGroupBytes = kInterleaveBlocks * F::kBytes;
  static constexpr int kFieldOffset = kInterleavedCodeBytes + 8 * F::kOffsetField;
};
using Q4_0x8 = Interleaved<Q4_0>;  // the offset multiplies d
using Q4_1x8 = Interleaved<Q4_1>;  // m
static_assert(Q4_0x8::kGroupBytes == 144 && Q4_0x8::kFieldOffset == 128, "interleave.h sizes");
static_assert(Q4_1x8::kGroupBytes == 160 && Q4_1x8::kFieldOffset == 144, "interleave.h sizes");

// p0..p3: the products of blocks (0, 1), (2, 3), (4, 5), (6, 7), eight int32 lanes per block
// (lanes 0..7 the first block, 8..15 the second). Returns lane j = the sum of block j's lanes.
inline __m256i SumBlockLanes(__m512i p0, __m512i p1, __m512i p2, __m512i p3) {
  // 128-bit quarter q of r03 = the sum of block q's two quarters (blocks 0..3), likewise r47.
  const __m512i r03 = _mm512_add_epi32(_mm512_shuffle_i32x4(p0, p1, 0x88),
                                       _mm512_shuffle_i32x4(p0, p1, 0xDD));
  const __m512i r47 = _mm512_add_epi32(_mm512_shuffle_i32x4(p2, p3, 0x88),
                                       _mm512_shuffle_i32x4(p2, p3, 0xDD));
  // Quarter q: lanes (l0 + l2 of block q, of block q + 4, l1 + l3 of block q, of q + 4), where
  // l0..l3 are the lanes of that block's quarter in r03 / r47.
  const __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi32(r03, r47),
                                     _mm512_unpackhi_epi32(r03, r47));
  // Quarter q, lanes 0 and 1: block q, block q + 4.
  const __m512i u = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, u));
}

template <typename I, int NA>
void RowDotInterleaved(const uint8_t* w, int64_t n_blocks, const uint8_t* act,
                       int64_t act_stride, float* y, int64_t y_stride) {
  using F = typename I::Block;
  ActRow32 a[NA];
  __m256 acc[NA];
  for (int b = 0; b < NA; ++b) {
    a[b] = ViewActRow32(act + b * act_stride, n_blocks);
    acc[b] = _mm256_setzero_ps();
  }
  const __m512i low = _mm512_set1_epi8(0x0F);
  const int64_t n_groups = n_blocks / kInterleaveBlocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    const uint8_t* grp = w + g * I::kGroupBytes;
    const int64_t i = g * kInterleaveBlocks;
    PrefetchWeights<I::kGroupBytes>(grp);
    const __m512i z0 = _mm512_loadu_si512(grp);
    const __m512i z1 = _mm512_loadu_si512(grp + 64);
    const __m512i codes[4] = {
        _mm512_and_si512(z0, low), _mm512_and_si512(_mm512_srli_epi16(z0, 4), low),
        _mm512_and_si512(z1, low), _mm512_and_si512(_mm512_srli_epi16(z1, 4), low)};
    const __m256 dw = _mm256_cvtph_ps(Load128(grp + kInterleavedCodeBytes));
    __m256 field = dw;
    if constexpr (I::kFieldOffset != kInterleavedCodeBytes) field = _mm256_cvtph_ps(Load128(grp + I::kFieldOffset));
    __m256i dot[NA];
    __m256 da[NA], ds[NA];
    const __m256i bias[NA] = {};  // no code bias in these formats
    for (int b = 0; b < NA; ++b) {
      const int8_t* q = a[b].qs + 32 * i;
      __m512i p[4];
      for (int k = 0; k < 4; ++k) {
        p[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes[k],
                                   _mm512_load_si512(q + 64 * k));
      }
      dot[b] = SumBlockLanes(p[0], p[1], p[2], p[3]);
      da[b] = _mm256_loadu_ps(a[b].d + i);
      ds[b] = _mm256_loadu_ps(a[b].ds + i);
    }
    AddBlockTerms<F, NA>(dot, dw, field, da, ds, bias, acc);
  }
  // The tail: r < 8 blocks, nibbles at 16 j, then d[r] (and m[r]). Lanes r..7 get scales 0
  // (masked loads) and codes 0, so their terms are +0 and leave those chains unchanged; the
  // masked activation loads read nothing past the row's r blocks.
  const int64_t i = n_groups * kInterleaveBlocks;
  if (const int r = static_cast<int>(n_blocks - i); r > 0) {
    const uint8_t* tail = w + n_groups * I::kGroupBytes;
    const __mmask8 lanes = static_cast<__mmask8>((1u << r) - 1);
    const __m256 dw = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(lanes, tail + 16 * r));
    __m256 field = dw;
    if constexpr (I::kFieldOffset != kInterleavedCodeBytes) {
      field = _mm256_cvtph_ps(_mm_maskz_loadu_epi16(lanes, tail + 18 * r));
    }
    // Blocks 2k and 2k + 1 as one 512-bit operand (zeros past r).
    __m512i codes[4];
    __mmask64 act_mask[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i lo = 2 * k < r ? NibblesVnni(tail + 32 * k) : _mm256_setzero_si256();
      const __m256i hi = 2 * k + 1 < r ? NibblesVnni(tail + 32 * k + 16) : _mm256_setzero_si256();
      codes[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      act_mask[k] = 2 * k + 1 < r ? ~__mmask64{0} : 2 * k < r ? __mmask64{0xFFFFFFFF} : 0;
    }
    __m256i dot[NA];
    __m256 da[NA], ds[NA];
    const __m256i bias[NA] = {};
    for (int b = 0; b < NA; ++b) {
      const int8_t* q = a[b].qs + 32 * i;
      __m512i p[4];
      for (int k = 0; k < 4; ++k) {
        p[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes[k],
                                   _mm512_maskz_loadu_epi8(act_mask[k], q + 64 * k));
      }
      dot[b] = SumBlockLanes(p[0], p[1], p[2], p[3]);
      da[b] = _mm256_maskz_loadu_ps(lanes, a[b].d + i);
      ds[b] = _mm256_maskz_loadu_ps(lanes, a[b].ds + i);
    }
    AddBlockTerms<F, NA>(dot, dw, field, da, ds, bias, acc);
  }
  for (int b = 0; b < NA; ++b) y[b * y_stride] = HorizontalSum(acc[b]);
}

template <typename I>
void InterleavedEntry(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                      int n_act, float* y, int64_t y_stride) {
  switch (n_act) {
    case 1:
      return RowDotInterleaved<I, 1>(w, n_blocks, act, act_stride, y, y_stride);
    case 2:
      return RowDotInterleaved<I, 2>(w, n_blocks, act, act_stride, y, y_stride);
    case 3:
      return RowDotInterleaved<I, 3>(w, n_blocks, act, act_stride, y, y_stride);
    default:
      return RowDotInterleaved<I, 4>(w, n_blocks, act, act_stride, y, y_stride);
  }
}

}  // namespace

RowDotFn Avx512VnniInterleavedRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return InterleavedEntry<Q4_0x8>;
    case GgmlType::kQ4_1:
      return InterleavedEntry<Q4_1x8>;
    default:
      return nullptr;
  }
}

}  // namespace tessera
