// AVX2 activation quantizer: the same arithmetic as act_quant.cc (max|x| / 127, x * (127 /
// max|x|) clamped to [-127, 127] and rounded half-to-even), eight lanes at a time. Division,
// multiplication, min/max and rounding are IEEE-exact per lane, and the maximum of finite
// values is order-independent, so for finite x the blocks are bit-identical to the scalar
// quantizer's.
#include <immintrin.h>

#include "kernels/cpu/act_quant.h"

namespace tessera {
namespace {

inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Quantizes 8 * n_vec floats with one scale into q (n_vec * 8 bytes); returns d.
inline float QuantizeGroupAvx2(const float* x, int n_vec, int8_t* q) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (int i = 0; i < n_vec; ++i) {
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
  }
  const float amax = HorizontalMax(vmax);
  const float d = amax / 127.0f;
  // As act_quant.cc's InverseScale: 127 / amax capped at FLT_MAX, 0 for an all-zero block.
  float inv = 0.0f;
  if (amax != 0.0f) {
    inv = 127.0f / amax;
    if (!(inv <= 3.40282347e38f)) inv = 3.40282347e38f;
  }
  const __m256 id = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int i = 0; i < n_vec; i += 4) {  // n_vec is a multiple of 4: 32 floats -> 32 bytes
    __m256i v[4];
    for (int k = 0; k < 4; ++k) {
      // max(scaled, lo) returns lo for a NaN, like fmax in the scalar code.
      const __m256 scaled = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * (i + k)), id);
      const __m256 r = _mm256_round_ps(_mm256_min_ps(_mm256_max_ps(scaled, lo), hi),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v[k] = _mm256_cvtps_epi32(r);
    }
    // Packing works per 128-bit lane; the permute restores element order.
    const __m256i p16a = _mm256_packs_epi32(v[0], v[1]);
    const __m256i p16b = _mm256_packs_epi32(v[2], v[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 8 * i), ordered);
  }
  return d;
}

inline int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Sums of the first and the second 16 int8 of q, as int32 vectors whose lanes add up to them.
inline void HalfSums(__m256i q, __m256i* lo_sums, __m256i* hi_sums) {
  const __m256i ones = _mm256_set1_epi16(1);
  *lo_sums = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)), ones);
  *hi_sums = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)), ones);
}

}  // namespace

void QuantizeActRow32Avx2(const float* x, int64_t n_elems, uint8_t* row) {
  const int64_t n_blocks = n_elems / 32;
  auto* qs = reinterpret_cast<int8_t*>(row);
  auto* d = reinterpret_cast<float*>(row + 32 * n_blocks);
  float* ds = d + n_blocks;
  auto* sums = reinterpret_cast<int32_t*>(ds + n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b, x += 32) {
    int8_t* q = qs + 32 * b;
    d[b] = QuantizeGroupAvx2(x, 4, q);
    __m256i lo, hi;
    HalfSums(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), &lo, &hi);
    sums[b] = HorizontalSum(_mm256_add_epi32(lo, hi));
    ds[b] = d[b] * static_cast<float>(sums[b]);
  }
}

void QuantizeActBlock256Avx2(const float* x, int64_t n_elems, ActBlock256* out) {
  for (int64_t b = 0; b < n_elems / 256; ++b, x += 256) {
    ActBlock256& blk = out[b];
    blk.d = QuantizeGroupAvx2(x, 32, blk.qs);
    for (int j = 0; j < 8; ++j) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs + 32 * j));
      __m256i lo, hi;
      HalfSums(q, &lo, &hi);
      blk.bsums[2 * j] = static_cast<int16_t>(HorizontalSum(lo));
      blk.bsums[2 * j + 1] = static_cast<int16_t>(HorizontalSum(hi));
    }
  }
}

}  // namespace tessera
