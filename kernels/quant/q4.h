// Q4_0 and Q4_1: 32 weights per block, 4-bit codes.
//
// Layout (ggml, GGUF): element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
//   Q4_0: w = d * (q - 8)          18 bytes / 32 weights = 4.5 bits per weight
//   Q4_1: w = d * q + m            20 bytes / 32 weights = 5.0 bits per weight
#ifndef TESSERA_KERNELS_QUANT_Q4_H_
#define TESSERA_KERNELS_QUANT_Q4_H_

#include <cstdint>

#include "kernels/quant/fp16.h"

namespace tessera {

inline constexpr int kQK4_0 = 32;
inline constexpr int kQK4_1 = 32;

struct BlockQ4_0 {
  fp16_t d;             // scale
  uint8_t qs[kQK4_0 / 2];  // nibbles
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");

struct BlockQ4_1 {
  fp16_t d;             // scale
  fp16_t m;             // minimum (offset)
  uint8_t qs[kQK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes");

void DequantizeQ4_0Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ4_0Ref(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ4_1Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ4_1Ref(const float* in, void* blocks, int64_t n_elems);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_Q4_H_
