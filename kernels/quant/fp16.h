// IEEE-754 binary16 and bfloat16 <-> float32 conversions, bit-exact with numpy's
// float16 casts (round to nearest, ties to even; NaN kept NaN) and the gguf package's BF16.
//
// Scalar, portable and constexpr-friendly: used by every reference (de)quantizer. SIMD kernels
// use F16C instructions instead, which give the same results.
#ifndef TESSERA_KERNELS_QUANT_FP16_H_
#define TESSERA_KERNELS_QUANT_FP16_H_

#include <cstdint>
#include <cstring>

namespace tessera {

using fp16_t = uint16_t;  // raw binary16 bits
using bf16_t = uint16_t;  // raw bfloat16 bits

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Exact: every binary16 value is representable in float32.
inline float Fp16ToFloat(fp16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);  // +-0
  // Subnormal: value = mant * 2^-24; normalise into a float32.
  int e = -1;
  do {
    ++e;
    mant <<= 1;
  } while ((mant & 0x400u) == 0);
  return BitsToFloat(sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13));
}

// Round to nearest even, overflow to inf, NaN stays NaN (made quiet, as F16C does; numpy keeps
// a signalling NaN's bits, so only NaN bit patterns can differ from numpy's cast).
inline fp16_t FloatToFp16(float f) {
  const uint32_t u = FloatToBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<fp16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<fp16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in binary16: value / 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return static_cast<fp16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // 14..24
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<fp16_t>(sign | q);
  }
  // Normal: rebias exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t r = abs - 0x38000000u;  // exponent 127 -> 15 bias
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<fp16_t>(sign | (r >> 13));
}

inline float Bf16ToFloat(bf16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

// Round to nearest even; NaN becomes a quiet NaN with the same sign (as the gguf package does).
inline bf16_t FloatToBf16(float f) {
  uint32_t u = FloatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>(((u & 0xffff0000u) | 0x400000u) >> 16);
  const uint64_t r = (static_cast<uint64_t>(u) + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<bf16_t>(r);
}

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_FP16_H_
