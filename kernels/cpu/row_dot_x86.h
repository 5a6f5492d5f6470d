// The loops shared by the x86 kernel files: one weight row against NA activation rows, block
// by block, with the per-format arithmetic supplied by a format struct F. Internal linkage on
// purpose, like simd_x86.h: each including file instantiates them with its own ISA flags.
#ifndef TESSERA_KERNELS_CPU_ROW_DOT_X86_H_
#define TESSERA_KERNELS_CPU_ROW_DOT_X86_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/act_quant.h"
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

// One weight row of 32-element blocks against NA activation rows (ActRow32).
//
// F (a format on one ISA) provides:
//   kBytes              bytes per block; its fp16 scale d is at offset 0
//   Codes(block)        the 32 codes as bytes in element order (unsigned, maybe biased)
//   Dot(codes, a)       8 int32 lanes summing to codes . a (a: 32 int8 activations)
//   kOffsetFactor, kOffsetField: w = d * code + kOffsetFactor * (fp16 at kOffsetField), e.g.
//                       Q4_0: -8 and 0 (d itself), Q4_1: 1 and the offset of m; 0: no offset
// so a block contributes d * d_a * Dot + kOffsetFactor * field * ds.
//
// Scales are handled 8 blocks at a time: the 8 weight scales times the 8 activation scales
// in one vector multiply, stored and then broadcast straight from memory into each block's
// multiply-add; the offset terms of 8 blocks are one multiply-add. Per block that leaves the
// code expansion, the integer dot, one conversion and one multiply-add per activation row.
// With few activation rows, blocks rotate over kChains accumulators per row so that the
// multiply-adds (4 cycles of latency) do not wait on each other.
template <typename F, int NA>
void RowDotBlock32(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                   float* y, int64_t y_stride) {
  constexpr bool kOffset = F::kOffsetFactor != 0.0f;
  constexpr int kChains = NA == 1 ? 4 : NA == 2 ? 2 : 1;
  ActRow32 a[NA];
  __m256 acc[kChains][NA], off_acc[NA];
  float tail_off[NA];
  for (int b = 0; b < NA; ++b) {
    a[b] = ViewActRow32(act + b * act_stride, n_blocks);
    for (int c = 0; c < kChains; ++c) acc[c][b] = _mm256_setzero_ps();
    off_acc[b] = _mm256_setzero_ps();
    tail_off[b] = 0.0f;
  }
  alignas(32) float scale[NA][8];
  int64_t i = 0;
  for (; i + 8 <= n_blocks; i += 8) {
    const uint8_t* wb = w + i * F::kBytes;
    PrefetchWeights<8 * F::kBytes>(wb);
    const __m256 dw = Fp16x8<F::kBytes>(wb);
    __m256 off = dw;
    if constexpr (kOffset && F::kOffsetField != 0) off = Fp16x8<F::kBytes>(wb + F::kOffsetField);
    for (int b = 0; b < NA; ++b) {
      _mm256_store_ps(scale[b], _mm256_mul_ps(dw, _mm256_loadu_ps(a[b].d + i)));
      if constexpr (kOffset)
        off_acc[b] = _mm256_fmadd_ps(off, _mm256_loadu_ps(a[b].ds + i), off_acc[b]);
    }
    // Make the compiler reload each scale as a broadcast from memory (a load, no ALU work)
    // instead of extracting it from the register with two shuffles.
    __asm__ volatile("" : : "r"(scale) : "memory");
    for (int j = 0; j < 8; ++j) {
      const __m256i codes = F::Codes(wb + j * F::kBytes);
      for (int b = 0; b < NA; ++b) {
        const __m256 dot = _mm256_cvtepi32_ps(F::Dot(codes, a[b].qs + 32 * (i + j)));
        __m256& c = acc[j % kChains][b];
        c = _mm256_fmadd_ps(dot, _mm256_set1_ps(scale[b][j]), c);
      }
    }
  }
  for (; i < n_blocks; ++i) {  // the last n_blocks % 8 blocks, one at a time
    const uint8_t* wb = w + i * F::kBytes;
    const float dw = LoadFp16(wb);
    const float off = F::kOffsetField != 0 ? LoadFp16(wb + F::kOffsetField) : dw;
    const __m256i codes = F::Codes(wb);
    for (int b = 0; b < NA; ++b) {
      const __m256 dot = _mm256_cvtepi32_ps(F::Dot(codes, a[b].qs + 32 * i));
      acc[0][b] = _mm256_fmadd_ps(dot, _mm256_set1_ps(dw * a[b].d[i]), acc[0][b]);
      if constexpr (kOffset) tail_off[b] += off * a[b].ds[i];
    }
  }
  for (int b = 0; b < NA; ++b) {
    for (int c = 1; c < kChains; ++c) acc[0][b] = _mm256_add_ps(acc[0][b], acc[c][b]);
    float sum = HorizontalSum(acc[0][b]);
    if constexpr (kOffset) sum += F::kOffsetFactor * (HorizontalSum(off_acc[b]) + tail_off[b]);
    y[b * y_stride] = sum;
  }
}

// F provides Block and Dot<NA>(block bytes, activation blocks, acc), which adds each row's
// float contribution of one super-block to acc[b].
template <typename F, int NA>
void RowDotK(const uint8_t* w, int64_t n_blocks, const uint8_t* act, int64_t act_stride, float* y,
             int64_t y_stride) {
  __m256 acc[NA];
  for (int b = 0; b < NA; ++b) acc[b] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n_blocks; ++i) {
    const ActBlock256* a[NA];
    for (int b = 0; b < NA; ++b) {
      a[b] = reinterpret_cast<const ActBlock256*>(act + b * act_stride) + i;
    }
    PrefetchWeights<sizeof(typename F::Block)>(w + i * sizeof(typename F::Block));
    F::template Dot<NA>(w + i * sizeof(typename F::Block), a, acc);
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
