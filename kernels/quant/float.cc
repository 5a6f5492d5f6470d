// Reference conversions of the float formats F32, F16 and BF16 (one element per "block").
//
// F32 is a plain copy. F16 and BF16 use the scalar conversions of fp16.h, which round to nearest
// even like numpy's float16 cast and the gguf package's BF16 quantizer. Storage is
// little-endian; the bytes are copied with memcpy because a row need not be aligned.
#include "kernels/quant/float.h"

#include <cstring>

#include "kernels/quant/fp16.h"

namespace tessera {

void DequantizeF32Ref(const void* blocks, float* out, int64_t n_elems) {
  if (n_elems <= 0) return;  // memcpy's pointers must be valid even for 0 bytes
  std::memcpy(out, blocks, static_cast<size_t>(n_elems) * sizeof(float));
}

void QuantizeF32Ref(const float* in, void* blocks, int64_t n_elems) {
  if (n_elems <= 0) return;
  std::memcpy(blocks, in, static_cast<size_t>(n_elems) * sizeof(float));
}

void DequantizeF16Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t i = 0; i < n_elems; ++i) {
    fp16_t h;
    std::memcpy(&h, bytes + 2 * i, sizeof h);
    out[i] = Fp16ToFloat(h);
  }
}

void QuantizeF16Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t i = 0; i < n_elems; ++i) {
    const fp16_t h = FloatToFp16(in[i]);
    std::memcpy(bytes + 2 * i, &h, sizeof h);
  }
}

void DequantizeBF16Ref(const void* blocks, float* out, int64_t n_elems) {
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  for (int64_t i = 0; i < n_elems; ++i) {
    bf16_t b;
    std::memcpy(&b, bytes + 2 * i, sizeof b);
    out[i] = Bf16ToFloat(b);
  }
}

void QuantizeBF16Ref(const float* in, void* blocks, int64_t n_elems) {
  auto* bytes = static_cast<uint8_t*>(blocks);
  for (int64_t i = 0; i < n_elems; ++i) {
    const bf16_t b = FloatToBf16(in[i]);
    std::memcpy(bytes + 2 * i, &b, sizeof b);
  }
}

}  // namespace tessera
