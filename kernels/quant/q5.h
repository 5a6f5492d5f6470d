// Q5_0 and Q5_1: 32 weights per block, 5-bit codes split into a low nibble and a high bit.
//
// Layout (ggml, GGUF): element j < 16 takes the low nibble of qs[j] and bit j of qh (a
// little-endian uint32); element j + 16 the high nibble of qs[j] and bit j + 16 of qh.
//   Q5_0: w = d * (q - 16)         22 bytes / 32 weights = 5.5 bits per weight
//   Q5_1: w = d * q + m            24 bytes / 32 weights = 6.0 bits per weight
#ifndef TESSERA_KERNELS_QUANT_Q5_H_
#define TESSERA_KERNELS_QUANT_Q5_H_

#include <cstdint>

#include "kernels/quant/fp16.h"

namespace tessera {

inline constexpr int kQK5_0 = 32;
inline constexpr int kQK5_1 = 32;

struct BlockQ5_0 {
  fp16_t d;
  uint8_t qh[4];  // 5th bits, little-endian uint32 (unaligned, hence bytes)
  uint8_t qs[kQK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block is 22 bytes");

struct BlockQ5_1 {
  fp16_t d;
  fp16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block is 24 bytes");

void DequantizeQ5_0Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ5_0Ref(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ5_1Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ5_1Ref(const float* in, void* blocks, int64_t n_elems);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_Q5_H_
