// The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Super-blocks of 256 weights (kQK_K) made of
// sub-blocks of 16 or 32 weights, each with its own quantized scale (and min).
// Layouts as in ggml's ggml-common.h (GGUF on disk); the bits per weight follow from the sizes.
// Each format's reference code lives in its own file, q<N>_k.cc.
#ifndef TESSERA_KERNELS_QUANT_KQUANTS_H_
#define TESSERA_KERNELS_QUANT_KQUANTS_H_

#include <cstdint>

#include "kernels/quant/fp16.h"
#include "kernels/quant/types.h"

namespace tessera {

// Q2_K: 16 sub-blocks of 16; 4-bit scale and 4-bit min per sub-block (scales[i] = sc | m << 4);
// w = d * sc * q - dmin * m, q in 0..3.  84 bytes / 256 = 2.625 bpw.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];  // 2-bit codes, 4 per byte
  fp16_t d;
  fp16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "Q2_K block is 84 bytes");

// Q3_K: 16 sub-blocks of 16; 6-bit signed scales (packed into 12 bytes, offset 32);
// w = d * (sc - 32) * (q - 4 * !hbit), q2 low bits in qs, high bit in hmask.
// 110 bytes / 256 = 3.4375 bpw.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  fp16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "Q3_K block is 110 bytes");

// Q4_K: 8 sub-blocks of 32; 6-bit scale and 6-bit min each, packed into 12 bytes;
// w = d * sc * q - dmin * m, q in 0..15.  144 bytes / 256 = 4.5 bpw.
struct BlockQ4_K {
  fp16_t d;
  fp16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block is 144 bytes");

// Q5_K: as Q4_K plus a 5th bit per weight in qh.  176 bytes / 256 = 5.5 bpw.
struct BlockQ5_K {
  fp16_t d;
  fp16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block is 176 bytes");

// Q6_K: 16 sub-blocks of 16; int8 scales; w = d * sc * (q - 32), q 6 bits: low 4 in ql,
// high 2 in qh.  210 bytes / 256 = 6.5625 bpw.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  fp16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block is 210 bytes");

// Unpacks the j-th (0..7) 6-bit scale and min of Q4_K / Q5_K from their 12-byte packing.
inline void GetScaleMinK4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void DequantizeQ2_KRef(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ2_KRef(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ3_KRef(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ3_KRef(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ4_KRef(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ4_KRef(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ5_KRef(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ5_KRef(const float* in, void* blocks, int64_t n_elems);
void DequantizeQ6_KRef(const void* blocks, float* out, int64_t n_elems);
void QuantizeQ6_KRef(const float* in, void* blocks, int64_t n_elems);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_KQUANTS_H_
