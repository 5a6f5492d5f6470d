// Arrays of floats to and from IEEE binary16 (kernels/quant/fp16.h's conversions: round to
// nearest even, overflow to inf, NaN stays NaN), with F16C where the CPU has it (AVX2 machines
// do) and the scalar conversions otherwise; both give the same bits. For the CPU backend's
// fp16 KV cache: a step stores each token's K and V once and reads every cached row back.
#ifndef TESSERA_KERNELS_CPU_FP16_ROWS_H_
#define TESSERA_KERNELS_CPU_FP16_ROWS_H_

#include <cstdint>

namespace tessera {

void FloatsToFp16(const float* in, int64_t n, uint16_t* out);
void Fp16ToFloats(const uint16_t* in, int64_t n, float* out);

// The F16C versions (fp16_rows_avx2.cc); callers go through the two above.
void FloatsToFp16F16c(const float* in, int64_t n, uint16_t* out);
void Fp16ToFloatsF16c(const uint16_t* in, int64_t n, float* out);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_FP16_ROWS_H_
