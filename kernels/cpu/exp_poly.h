// exp for the CPU backend's elementwise loops (SwiGLU, the softmax of attention): the Cephes
// single-precision range reduction and polynomial (S. Moshier's expf; within about 1 ulp of the
// correctly rounded value for |x| <= 87), written as plain float arithmetic so that the loops
// around it vectorize: one libm call per element cost a decode step of SmolLM2 several percent
// in SwiGLU and the softmax together.
//
// The operations and their order are fixed and the library is built with -ffp-contract=off, so
// scalar code and every vector width give the same bits (a sequence's numbers do not depend on
// which clone or which lanes computed them). Internal linkage on purpose, like simd_x86.h.
#ifndef TESSERA_KERNELS_CPU_EXP_POLY_H_
#define TESSERA_KERNELS_CPU_EXP_POLY_H_

#include <cstdint>
#include <cstring>

namespace tessera {
namespace {  // NOLINT(build/namespaces): see the top of the file

// exp(x) for x clamped to [-88, 88]: at most 2^127 (no overflow); 0 from x ~ -87.7 down (where
// the scale 2^k would be denormal), a few denormal results just above.
inline __attribute__((always_inline)) float ExpPoly(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -88.0f ? -88.0f : x;
  // k = round(x / ln 2) by the 1.5 * 2^23 trick (|k| <= 127): k's integer sits in the low bits
  // of kf, and plain float arithmetic keeps the loop vectorizable.
  constexpr float kRound = 12582912.0f;
  const float kf = x * 1.44269504088896341f + kRound;
  const float k = kf - kRound;
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;  // x - k ln 2, two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = (p * (r * r) + r) + 1.0f;  // exp(r), |r| <= ln(2) / 2
  int32_t k_bits;
  std::memcpy(&k_bits, &kf, sizeof(k_bits));
  const int32_t e = k_bits - 0x4B400000 + 127;  // the biased exponent of 2^k
  const int32_t bits = (e > 0 ? e : 0) << 23;   // 2^k, or 0 for k < -126
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return er * scale;
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_EXP_POLY_H_
