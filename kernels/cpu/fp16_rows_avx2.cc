// F16C conversions (compiled with the AVX2 flags, which include -mf16c): vcvtps2ph with
// round-to-nearest-even is the scalar FloatToFp16's rounding, and vcvtph2ps is exact. The
// tails go through an 8-wide buffer rather than fp16.h's inline scalar functions, which an ISA
// file must not instantiate (the linker could keep its AVX2 copy for the portable callers).
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/fp16_rows.h"

namespace tessera {

void FloatsToFp16F16c(const float* in, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  if (i < n) {
    alignas(32) float f[8] = {};
    alignas(16) uint16_t h[8];
    std::memcpy(f, in + i, static_cast<size_t>(n - i) * sizeof(float));
    _mm_store_si128(reinterpret_cast<__m128i*>(h),
                    _mm256_cvtps_ph(_mm256_load_ps(f), _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(out + i, h, static_cast<size_t>(n - i) * sizeof(uint16_t));
  }
}

void Fp16ToFloatsF16c(const uint16_t* in, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
  if (i < n) {
    alignas(16) uint16_t h[8] = {};
    alignas(32) float f[8];
    std::memcpy(h, in + i, static_cast<size_t>(n - i) * sizeof(uint16_t));
    _mm256_store_ps(f, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h))));
    std::memcpy(out + i, f, static_cast<size_t>(n - i) * sizeof(float));
  }
}

}  // namespace tessera
