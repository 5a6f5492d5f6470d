// AVX-512 VNNI tiled kernels (gemm_kernels.h) for the 32-element block formats: 512-bit
// vectors, one per 16-row activation panel; tiles of 4 weight rows x 2 panels (8 int32 block
// accumulators + 8 float sums in registers).
//
// Trick: vpdpbusd multiplies the panel's unsigned bytes (activation + 128) by the broadcast
// signed weight codes and adds groups of four into the 16 lanes, one lane per activation row,
// exactly; seeding each block's accumulator with -128 * sum(codes) removes the bias. Every
// weight code here is in [-128, 127] (Q4/Q5 codes 0..31, Q8_0 its int8 values).
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_kquant_x86.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

struct Ops512 {
  using I = __m512i;
  using F = __m512;
  static constexpr int kVecs = 1;
  static constexpr bool kBiased = true;
  static I LoadA(const uint8_t* p) { return _mm512_load_si512(p); }
  static I Bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  static I Dot(I acc, I a, I w) { return _mm512_dpbusd_epi32(acc, a, w); }
  static I DotPairs(I acc, I a, I b) { return _mm512_dpwssd_epi32(acc, a, b); }
  static I AddI(I a, I b) { return _mm512_add_epi32(a, b); }
  static I MulLoI(I a, I b) { return _mm512_mullo_epi32(a, b); }
  static I ZeroI() { return _mm512_setzero_si512(); }
  static I SetI(int32_t v) { return _mm512_set1_epi32(v); }
  static F ZeroF() { return _mm512_setzero_ps(); }
  static F SetF(float v) { return _mm512_set1_ps(v); }
  static F LoadF(const float* p) { return _mm512_load_ps(p); }
  static void StoreF(float* p, F v) { _mm512_store_ps(p, v); }
  // The masked form: the plain intrinsic's undefined pass-through makes GCC 12 warn.
  static F Cvt(I v) { return _mm512_maskz_cvtepi32_ps(0xFFFF, v); }
  static F Mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F Add(F a, F b) { return _mm512_add_ps(a, b); }
  static F Sub(F a, F b) { return _mm512_sub_ps(a, b); }
  // GCC implements the intrinsics as vector arithmetic and may fuse a product into a following
  // add (-ffp-contract=fast); an empty asm makes the product an opaque rounded value.
  static F Opaque(F v) {
    __asm__("" : "+v"(v));
    return v;
  }
};

constexpr int kRows = 4, kPanels = 2;

}  // namespace

GemmRowsFn Avx512VnniGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return GemmRows<Q4_0, kRows, kPanels, SelectTile<Ops512, Q4_0, kRows, kPanels>>;
    case GgmlType::kQ4_1:
      return GemmRows<Q4_1, kRows, kPanels, SelectTile<Ops512, Q4_1, kRows, kPanels>>;
    case GgmlType::kQ5_0:
      return GemmRows<Q5_0, kRows, kPanels, SelectTile<Ops512, Q5_0, kRows, kPanels>>;
    case GgmlType::kQ5_1:
      return GemmRows<Q5_1, kRows, kPanels, SelectTile<Ops512, Q5_1, kRows, kPanels>>;
    case GgmlType::kQ8_0:
      return GemmRows<Q8_0Signed, kRows, kPanels, SelectTile<Ops512, Q8_0Signed, kRows, kPanels>>;
    default:
      return nullptr;
  }
}

// The k-quants (gemm_kquant_x86.h): the same 4 x 2 tiles.
GemmRowsFn Avx512VnniKGemmRows(GgmlType type) { return KGemmRows<Ops512, kRows, kPanels>(type); }

}  // namespace tessera
