// The 512-bit vector operations of the tiled GEMMs (the Ops of gemm_x86.h and
// gemm_kquant_x86.h), shared by gemm_avx512vnni.cc and gemm_amx.cc. Internal linkage on purpose
// (see simd_x86.h); include only from files built with AVX-512 VNNI.
#ifndef TESSERA_KERNELS_CPU_GEMM_OPS_AVX512VNNI_H_
#define TESSERA_KERNELS_CPU_GEMM_OPS_AVX512VNNI_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

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
  // Dot(acc, a, Bcast(p)) as one instruction with an embedded broadcast: GCC 12 does not fold
  // the broadcast load into vpdpbusd, and the separate vpbroadcastd was half of the tiles'
  // instructions where each weight group meets one panel (decode batches of 16).
  static I DotB(I acc, I a, const int8_t* p) {
    using Group = int32_t __attribute__((may_alias));
    __asm__("vpdpbusd %2%{1to16%}, %1, %0"
            : "+v"(acc)
            : "v"(a), "m"(*reinterpret_cast<const Group*>(p)));
    return acc;
  }
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

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_GEMM_OPS_AVX512VNNI_H_
