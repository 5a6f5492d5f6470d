// AVX-512 VNNI kernels (256-bit vectors, AVX512VL encoding) for the 32-element block formats;
// the k-quants are in kquants_avx512vnni.cc, the float formats use the AVX2 kernels.
//
// Trick: vpdpbusd multiplies unsigned bytes by signed bytes and adds groups of four into int32
// lanes in one instruction, without the int16 saturation of vpmaddubsw, so the block's integer
// dot product is exact for any codes 0..255. Q8_0 feeds w + 128 (w xor 0x80) as the unsigned
// operand and subtracts 128 * sum(a) from the block's integer dot. Q5's fifth bits are added to the nibbles with a byte mask straight from
// the 32-bit qh (vpaddb under mask). The float side is row_dot_x86.h's, shared with AVX2: the
// integer block dots are the same, so results equal the AVX2 and scalar kernels' bit for bit.
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/row_dot_x86.h"
#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"

namespace tessera {
namespace {

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
  static constexpr float kOffsetFactor = -8.0f;  // w = d * (q - 8)
  static constexpr int kOffsetField = offsetof(BlockQ4_0, d);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return NibblesVnni(b + offsetof(BlockQ4_0, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

struct Q4_1 {
  static constexpr int kBytes = sizeof(BlockQ4_1);
  static constexpr float kOffsetFactor = 1.0f;  // w = d * q + m
  static constexpr int kOffsetField = offsetof(BlockQ4_1, m);
  static constexpr int kCodeBias = 0;
  static __m256i Codes(const uint8_t* b) { return NibblesVnni(b + offsetof(BlockQ4_1, qs)); }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

struct Q5_0 {
  static constexpr int kBytes = sizeof(BlockQ5_0);
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
  static constexpr float kOffsetFactor = 0.0f;
  static constexpr int kOffsetField = 0;
  static constexpr int kCodeBias = 128;
  static __m256i Codes(const uint8_t* b) {
    return _mm256_xor_si256(Load256(b + offsetof(BlockQ8_0, qs)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i Dot(__m256i codes, const int8_t* a) { return DotVnni(codes, a); }
};

}  // namespace

RowDotFn Avx512VnniRowDot(GgmlType type) {
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
    default:
      return Avx512VnniKQuantRowDot(type);
  }
}

}  // namespace tessera
