// AVX2 tiled kernels (gemm_kernels.h) for the 32-element block formats, also used on AVX-512
// CPUs without VNNI: two 256-bit vectors per 16-row activation panel, tiles of 2 weight rows x
// 1 panel (16 registers only).
//
// Trick: vpmaddubsw multiplies the panel's unsigned bytes (activation + 128, <= 255) by the
// broadcast weight codes and vpmaddwd sums the int16 pairs into int32 lanes, one lane per
// activation row. The int16 pairs cannot saturate for Q4/Q5 codes (2 * 255 * 31 < 32767); the
// accumulator starts at -128 * sum(codes) to remove the bias. Q8_0's codes reach -128, so it
// unbiases the activations instead (xor 0x80) and multiplies |w| by sign(w) * a (vpsignb),
// 2 * 128 * 127 < 32767.
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/block32_avx2.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_kquant_x86.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

struct Ops256 {
  using I = __m256i;
  using F = __m256;
  static constexpr int kVecs = 2;
  static constexpr bool kBiased = true;
  static I LoadA(const uint8_t* p) { return _mm256_load_si256(reinterpret_cast<const I*>(p)); }
  static I Bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static I Dot(I acc, I a, I w) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w),
                                                   _mm256_set1_epi16(1)));
  }
  static I DotB(I acc, I a, const int8_t* p) { return Dot(acc, a, Bcast(p)); }
  static I DotPairs(I acc, I a, I b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static I AddI(I a, I b) { return _mm256_add_epi32(a, b); }
  static I MulLoI(I a, I b) { return _mm256_mullo_epi32(a, b); }
  static I ZeroI() { return _mm256_setzero_si256(); }
  static I SetI(int32_t v) { return _mm256_set1_epi32(v); }
  static F ZeroF() { return _mm256_setzero_ps(); }
  static F SetF(float v) { return _mm256_set1_ps(v); }
  static F LoadF(const float* p) { return _mm256_load_ps(p); }
  static void StoreF(float* p, F v) { _mm256_store_ps(p, v); }
  static F Cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static F Mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F Add(F a, F b) { return _mm256_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm256_sub_ps(a, b); }
  // Keeps GCC from fusing the product into the following add (see gemm_avx512vnni.cc).
  static F Opaque(F v) {
    __asm__("" : "+x"(v));
    return v;
  }
};

// Q8_0: signed codes down to -128 against unbiased activations.
struct Ops256Signed : Ops256 {
  static constexpr bool kBiased = false;
  static I Dot(I acc, I a_biased, I w) {
    const I a = _mm256_xor_si256(a_biased, _mm256_set1_epi8(static_cast<char>(0x80)));
    const I prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(prod, _mm256_set1_epi16(1)));
  }
  static I DotB(I acc, I a, const int8_t* p) { return Dot(acc, a, Bcast(p)); }
};

constexpr int kRows = 2, kPanels = 1;

}  // namespace

GemmRowsFn Avx2GemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return GemmRows<Q4_0, kRows, kPanels, SelectTile<Ops256, Q4_0, kRows, kPanels>>;
    case GgmlType::kQ4_1:
      return GemmRows<Q4_1, kRows, kPanels, SelectTile<Ops256, Q4_1, kRows, kPanels>>;
    case GgmlType::kQ5_0:
      return GemmRows<Q5_0, kRows, kPanels, SelectTile<Ops256, Q5_0, kRows, kPanels>>;
    case GgmlType::kQ5_1:
      return GemmRows<Q5_1, kRows, kPanels, SelectTile<Ops256, Q5_1, kRows, kPanels>>;
    case GgmlType::kQ8_0:
      return GemmRows<Q8_0, kRows, kPanels, SelectTile<Ops256Signed, Q8_0, kRows, kPanels>>;
    default:
      return nullptr;
  }
}

// The k-quants (gemm_kquant_x86.h): the same 2 x 1 tiles (16 registers).
GemmRowsFn Avx2KGemmRows(GgmlType type) { return KGemmRows<Ops256, kRows, kPanels>(type); }

}  // namespace tessera
