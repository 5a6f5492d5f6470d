// Small AVX2 helpers shared by the x86 kernel files (*_avx2.cc, *_avx512vnni.cc).
//
// Everything here has internal linkage (unnamed namespace) on purpose: each kernel file is
// compiled with different instruction-set flags, and a shared inline function would be merged
// by the linker into one copy, possibly one using AVX-512 instructions called from the AVX2
// path. Include this only from files compiled with at least the AVX2 flags.
#ifndef TESSERA_KERNELS_CPU_SIMD_X86_H_
#define TESSERA_KERNELS_CPU_SIMD_X86_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tessera {
namespace {  // NOLINT(build/namespaces): see the file comment

inline __m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// An fp16 value at any address, converted exactly by F16C.
inline float LoadFp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)): CombineChains of dot_kernels.h.
inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Sum of the eight int32 lanes (exact).
inline int32_t HorizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// v as an opaque rounded value: keeps the compiler from fusing a product into the add that
// follows (GCC implements _mm256_mul_ps as vector arithmetic, which -ffp-contract=fast, its
// default, may contract with an add into a fused multiply-add). The canonical summation
// order (dot_kernels.h) rounds every product; kernels/CMakeLists.txt also passes
// -ffp-contract=off, this keeps the promise independent of build flags.
inline __m256 Rounded(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

inline float Rounded(float v) {
  __asm__("" : "+x"(v));
  return v;
}

// 16 bytes of packed 4-bit codes -> 32 bytes: low nibbles first, then high nibbles (the
// element order of Q4_0/Q4_1/Q5_0/Q5_1 blocks: element j < 16 is the low nibble of byte j).
inline __m256i Nibbles32(const uint8_t* qs) {
  const __m128i v = Load128(qs);
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Byte j of the result is 0xFF if bit j of `bits` is set, else 0.
inline __m256i SpreadBits32(uint32_t bits) {
  // Byte j takes byte j / 8 of `bits`, then tests bit j % 8 of it.
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                                        _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                           0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// Sum of unsigned u8 x signed s8 products, as 8 int32 lanes (no saturation: callers keep
// 2 * u * |s| <= 32767, true for u <= 128 and s in [-127, 127]).
inline __m256i DotU8S8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_SIMD_X86_H_
