// Q8_0: 32 weights per block, signed 8-bit codes. w = d * q. 34 bytes / 32 = 8.5 bits per weight.
#ifndef TESSERA_KERNELS_QUANT_Q8_H_
#define TESSERA_KERNELS_QUANT_Q8_H_

#include <cstdint>

#include "kernels/quant/fp16.h"

namespace tessera {

inline constexpr int kQK8_0 = 32;

struct BlockQ8_0 {
  fp16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");

void DequantizeQ8_0Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ8_0Ref(const float* in, void* blocks, int64_t n_elems);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_Q8_H_
