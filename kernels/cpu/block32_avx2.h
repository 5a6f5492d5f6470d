// The 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as the AVX2 kernels read them:
// shared by the row-dot kernels (dot_avx2.cc, row_dot_x86.h) and the tiled GEMM (gemm_avx2.cc,
// gemm_x86.h), so each format's code expansion and offset live in one place per ISA.
//
// Each format provides
//   kBytes                       bytes of one block
//   kOffsetFactor, kOffsetField  w = d * code + kOffsetFactor * fp16 at kOffsetField (d or m)
//   kCodeBias                    what Codes adds to every code (subtracted again in integers)
//   kSignedCodes                 whether Codes are signed bytes (Q8_0) rather than 0..31
//   Codes(block)                 the 32 codes as bytes in element order
//   Dot(codes, a)                int32 lanes of the exact integer products with 32 int8 a
// Internal linkage on purpose (see simd_x86.h); include only from files built with AVX2 flags.
#ifndef TESSERA_KERNELS_CPU_BLOCK32_AVX2_H_
#define TESSERA_KERNELS_CPU_BLOCK32_AVX2_H_

#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

struct Q4_0 {
  static constexpr int kBytes = sizeof(BlockQ4_0);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = -8.0f;  // w = d * (q - 8)
  static constexpr int kOffsetField = offsetof(BlockQ4_0, d);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return Nibbles32(b + offsetof(BlockQ4_0, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotU8S8(codes, Load256(a)); }
};

struct Q4_1 {
  static constexpr int kBytes = sizeof(BlockQ4_1);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = 1.0f;  // w = d * q + m
  static constexpr int kOffsetField = offsetof(BlockQ4_1, m);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return Nibbles32(b + offsetof(BlockQ4_1, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotU8S8(codes, Load256(a)); }
};

// Q5: the fifth bit of element j is bit j of qh; it adds 16 to the nibble.
inline __m256i Codes5(const uint8_t* qs, const uint8_t* qh) {
  const __m256i high = _mm256_and_si256(SpreadBits32(LoadU32(qh)), _mm256_set1_epi8(0x10));
  return _mm256_or_si256(Nibbles32(qs), high);
}

struct Q5_0 {
  static constexpr int kBytes = sizeof(BlockQ5_0);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = -16.0f;  // w = d * (q - 16)
  static constexpr int kOffsetField = offsetof(BlockQ5_0, d);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) {
    return Codes5(b + offsetof(BlockQ5_0, qs), b + offsetof(BlockQ5_0, qh));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotU8S8(codes, Load256(a)); }
};

struct Q5_1 {
  static constexpr int kBytes = sizeof(BlockQ5_1);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = 1.0f;  // w = d * q + m
  static constexpr int kOffsetField = offsetof(BlockQ5_1, m);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) {
    return Codes5(b + offsetof(BlockQ5_1, qs), b + offsetof(BlockQ5_1, qh));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotU8S8(codes, Load256(a)); }
};

struct Q8_0 {
  static constexpr int kBytes = sizeof(BlockQ8_0);
  static constexpr bool kSignedCodes = true;
  static constexpr float kOffsetFactor = 0.0f;  // signed codes, no offset
  static constexpr int kOffsetField = 0;
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return Load256(b + offsetof(BlockQ8_0, qs)); }
  // w * a = |w| * (sign(w) * a); |w| <= 128 fits the unsigned operand.
  static __m256i Dot(__m256i codes, const int8_t* a) {
    return DotU8S8(_mm256_sign_epi8(codes, codes), _mm256_sign_epi8(Load256(a), codes));
  }
};

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_BLOCK32_AVX2_H_
