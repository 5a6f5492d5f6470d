// Float formats: F32, F16 (IEEE binary16), BF16. One element per "block".
#ifndef TESSERA_KERNELS_QUANT_FLOAT_H_
#define TESSERA_KERNELS_QUANT_FLOAT_H_

#include <cstdint>

namespace tessera {

void DequantizeF32Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeF32Ref(const float* in, void* blocks, int64_t n_elems);
void DequantizeF16Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeF16Ref(const float* in, void* blocks, int64_t n_elems);
void DequantizeBF16Ref(const void* blocks, float* out, int64_t n_elems);
void QuantizeBF16Ref(const float* in, void* blocks, int64_t n_elems);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_FLOAT_H_
