// The 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as the AVX-512 VNNI kernels read
// them (256-bit vectors, AVX512VL encoding): shared by the row-dot kernels (dot_avx512vnni.cc)
// and the tiled GEMM (gemm_avx512vnni.cc). Same members as block32_avx2.h; Q8_0 feeds w + 128
// (w xor 0x80) as vpdpbusd's unsigned operand, kCodeBias = 128.
// Internal linkage on purpose (see simd_x86.h); include only from files built with AVX-512 VNNI.
#ifndef TESSERA_KERNELS_CPU_BLOCK32_AVX512VNNI_H_
#define TESSERA_KERNELS_CPU_BLOCK32_AVX512VNNI_H_

#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

// 16 bytes of nibbles -> 32 codes (low nibbles, then high): one broadcast load, one variable
// shift (0 for the low 128 bits, 4 for the high), one mask.
inline __m256i NibblesVnni(const uint8_t* qs) {
  const __m256i v = _mm256_broadcastsi128_si256(Load128(qs));
  const __m256i shifted =
      _mm256_srlv_epi16(v, _mm256_setr_epi64x(0, 0, 0x0004000400040004, 0x0004000400040004));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

inline __m256i Codes5Vnni(const uint8_t* qs, const uint8_t* qh) {
  const __m256i nib = NibblesVnni(qs);
  return _mm256_mask_add_epi8(nib, _cvtu32_mask32(LoadU32(qh)), nib, _mm256_set1_epi8(0x10));
}

inline __m256i DotVnni(__m256i codes, const int8_t* a) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, Load256(a));
}

struct Q4_0 {
  static constexpr int kBytes = sizeof(BlockQ4_0);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = -8.0f;  // w = d * (q - 8)
  static constexpr int kOffsetField = offsetof(BlockQ4_0, d);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return NibblesVnni(b + offsetof(BlockQ4_0, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

struct Q4_1 {
  static constexpr int kBytes = sizeof(BlockQ4_1);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = 1.0f;  // w = d * q + m
  static constexpr int kOffsetField = offsetof(BlockQ4_1, m);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return NibblesVnni(b + offsetof(BlockQ4_1, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

struct Q5_0 {
  static constexpr int kBytes = sizeof(BlockQ5_0);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = -16.0f;  // w = d * (q - 16)
  static constexpr int kOffsetField = offsetof(BlockQ5_0, d);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) {
    return Codes5Vnni(b + offsetof(BlockQ5_0, qs), b + offsetof(BlockQ5_0, qh));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

struct Q5_1 {
  static constexpr int kBytes = sizeof(BlockQ5_1);
  static constexpr bool kSignedCodes = false;
  static constexpr float kOffsetFactor = 1.0f;  // w = d * q + m
  static constexpr int kOffsetField = offsetof(BlockQ5_1, m);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) {
    return Codes5Vnni(b + offsetof(BlockQ5_1, qs), b + offsetof(BlockQ5_1, qh));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

// Codes w + 128 (w xor 0x80) are unsigned: vpdpbusd gives (w + 128) . a exactly, and the bias
// comes back in integers, 128 * sum(a) per block (kCodeBias, ActRow32::sum), so the block's
// dot is w . a exactly, as in the other kernels.
struct Q8_0 {
  static constexpr int kBytes = sizeof(BlockQ8_0);
  static constexpr bool kSignedCodes = false;  // w + 128
  static constexpr float kOffsetFactor = 0.0f;
  static constexpr int kOffsetField = 0;
  static constexpr int kCodeBias = 128;
  static __m256i Codes(const uint8_t* b) {
    return _mm256_xor_si256(Load256(b + offsetof(BlockQ8_0, qs)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

// The tiled GEMMs (gemm_avx512vnni.cc, gemm_amx.cc) multiply weight codes as the signed
// operand (vpdpbusd's, tdpbsud's), so Q8_0's int8 values go in as stored.
struct Q8_0Signed : Q8_0 {
  static constexpr bool kSignedCodes = true;
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return Load256(b + offsetof(BlockQ8_0, qs)); }
};

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_BLOCK32_AVX512VNNI_H_
