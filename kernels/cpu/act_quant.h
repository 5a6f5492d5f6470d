// Activation formats of the fused CPU matmul: the float activations x are quantized to 8 bits
// once per call, so the inner loops multiply small integers (int8 x 4..8-bit weight codes) with
// integer SIMD and apply the float scales once per block.
//
// These formats are internal to kernels/cpu (they are not GGUF/ggml formats) and each weight
// type uses one of them:
//   ActRow32    for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32-element weight blocks);
//   ActBlock256 for the k-quants (256-element super-blocks);
//   plain floats for F32, F16, BF16 weights.
//
// Quantization of a block: d = max|x| / 127, q = round_half_even(x * (127 / max|x|)) in
// [-127, 127], so |x - d * q| <= d / 2 (up to float rounding). An all-zero block has d = 0,
// q = 0; a block of tiny denormals (max|x| < 127 / FLT_MAX) quantizes to zeros. x must be
// finite. For finite x the SIMD quantizer produces bit-identical blocks to the scalar one.
#ifndef TESSERA_KERNELS_CPU_ACT_QUANT_H_
#define TESSERA_KERNELS_CPU_ACT_QUANT_H_

#include <cstdint>

#include "kernels/quant/types.h"

namespace tessera {

// A row of n_blocks 32-element blocks, stored as arrays so that the scales of 8 consecutive
// blocks load as one vector (the kernels combine them with 8 weight scales at once):
//   qs[n_blocks * 32] (int8) | d[n_blocks] (float) | ds[n_blocks] (float) | sum[n_blocks] (int32)
// Block i holds x[32 i .. 32 i + 31] ~= d[i] * qs[32 i ..]; sum[i] is the sum of its qs and
// ds[i] = d[i] * sum[i], which is what a per-block weight offset multiplies (Q4_0's -8 d_w,
// Q4_1's min m); kernels that bias signed weight codes take the bias back exactly with sum.
struct ActRow32 {
  const int8_t* qs;
  const float* d;
  const float* ds;
  const int32_t* sum;
};

// The arrays of a quantized row that starts at `row` (64-byte aligned rows keep qs aligned).
ActRow32 ViewActRow32(const uint8_t* row, int64_t n_blocks);

struct ActBlock256 {
  int8_t qs[256];
  int16_t bsums[16];  // sums of qs over each 16 elements (for the k-quants' per-sub-block mins)
  float d;
};
static_assert(sizeof(ActBlock256) == 292, "ActBlock256 is 292 bytes");

enum class ActFormat { kFloat, kBlock32, kBlock256 };

// The activation format MatMulQ uses for weights of `type` (kFloat for F32/F16/BF16).
ActFormat ActFormatFor(GgmlType type);

// Bytes of one activation row of `cols` elements (cols a multiple of the block): for the
// quantized formats a multiple of 64, so that consecutive rows stay 64-byte aligned; for
// kFloat exactly cols floats (the kernels read x in place).
int64_t ActRowBytes(ActFormat format, int64_t cols);

// Quantize n_elems floats (a multiple of 32, resp. 256) into one row.
void QuantizeActRow32Scalar(const float* x, int64_t n_elems, uint8_t* row);
void QuantizeActBlock256Scalar(const float* x, int64_t n_elems, ActBlock256* out);
void QuantizeActRow32Avx2(const float* x, int64_t n_elems, uint8_t* row);
void QuantizeActBlock256Avx2(const float* x, int64_t n_elems, ActBlock256* out);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_ACT_QUANT_H_
