// AVX2 kernels for the 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the float
// formats (F32, F16, BF16). The k-quants are in kquants_avx2.cc.
//
// Trick: each weight block is expanded to 32 bytes of codes in element order, multiplied with
// the int8 activations by vpmaddubsw (unsigned x signed -> int16 pairs, which never saturate
// here: codes <= 128, activations in [-127, 127]) and vpmaddwd (-> int32), giving exactly the
// scalar kernel's integer block sum; Q8_0's signed codes use |w| and sign(w) * a (vpsignb),
// whose product is w * a. The float side (row_dot_x86.h) is the canonical order of
// dot_kernels.h with 8 blocks per vector step, so results equal dot_scalar.cc's bit for bit.
// The float formats follow their canonical order too (dot_scalar.cc emulates this kernel).
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/block32_avx2.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/row_dot_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

// Float weights: 8 elements per step converted to float32 (exact for F16 and BF16), fused
// multiply-add with the float activations; the tail is done one element at a time.
struct F32 {
  static constexpr int kBytes = 4;
  static __m256 Load8(const uint8_t* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  }
  static float Load1(const uint8_t* p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
};
struct F16 {
  static constexpr int kBytes = 2;
  static __m256 Load8(const uint8_t* p) { return _mm256_cvtph_ps(Load128(p)); }
  static float Load1(const uint8_t* p) { return LoadFp16(p); }
};
struct BF16 {
  static constexpr int kBytes = 2;
  static __m256 Load8(const uint8_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(Load128(p)), 16));
  }
  static float Load1(const uint8_t* p) {
    const uint32_t bits = static_cast<uint32_t>(p[0] | p[1] << 8) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
};

template <typename F, int NA>
void RowDotFloat(const uint8_t* w, int64_t n, const uint8_t* act, int64_t act_stride, float* y,
                 int64_t y_stride) {
  const float* x[NA];
  for (int b = 0; b < NA; ++b) x[b] = reinterpret_cast<const float*>(act + b * act_stride);
  __m256 acc0[NA], acc1[NA];
  for (int b = 0; b < NA; ++b) acc0[b] = acc1[b] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    PrefetchWeights<16 * F::kBytes>(w + i * F::kBytes);
    const __m256 w0 = F::Load8(w + i * F::kBytes), w1 = F::Load8(w + (i + 8) * F::kBytes);
    for (int b = 0; b < NA; ++b) {
      acc0[b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[b] + i), acc0[b]);
      acc1[b] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[b] + i + 8), acc1[b]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 w0 = F::Load8(w + i * F::kBytes);
    for (int b = 0; b < NA; ++b) acc0[b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[b] + i), acc0[b]);
  }
  for (int b = 0; b < NA; ++b) {
    float sum = HorizontalSum(_mm256_add_ps(acc0[b], acc1[b]));
    for (int64_t k = i; k < n; ++k) sum = sum + Rounded(F::Load1(w + k * F::kBytes) * x[b][k]);
    y[b * y_stride] = sum;
  }
}

// RowDotFn entry point: dispatches n_act to the unrolled instantiations.
template <typename F>
void FloatEntry(const uint8_t* w, int64_t n, const uint8_t* act, int64_t act_stride, int n_act,
                float* y, int64_t y_stride) {
  switch (n_act) {
    case 1:
      return RowDotFloat<F, 1>(w, n, act, act_stride, y, y_stride);
    case 2:
      return RowDotFloat<F, 2>(w, n, act, act_stride, y, y_stride);
    case 3:
      return RowDotFloat<F, 3>(w, n, act, act_stride, y, y_stride);
    default:
      return RowDotFloat<F, 4>(w, n, act, act_stride, y, y_stride);
  }
}

}  // namespace

RowDotFn Avx2RowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return Block32Entry<Q4_0>;
    case GgmlType::kQ4_1:
      return Block32Entry<Q4_1>;
    case GgmlType::kQ5_0:
      return Block32Entry<Q5_0>;
    case GgmlType::kQ5_1:
      return Block32Entry<Q5_1>;
    case GgmlType::kQ8_0:
      return Block32Entry<Q8_0>;
    case GgmlType::kF32:
      return FloatEntry<F32>;
    case GgmlType::kF16:
      return FloatEntry<F16>;
    case GgmlType::kBF16:
      return FloatEntry<BF16>;
    default:
      return Avx2KQuantRowDot(type);
  }
}

}  // namespace tessera
