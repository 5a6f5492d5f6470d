// Portable decoding of one k-quant super-block (Q2_K..Q6_K, layouts in kernels/quant/kquants.h)
// into its 256 integer codes and per-sub-block integer scales and mins: what the scalar k-quant
// kernels compute on, and what the tiled k-quant GEMM decodes weight rows with.
#ifndef TESSERA_KERNELS_CPU_KQUANT_DECODE_H_
#define TESSERA_KERNELS_CPU_KQUANT_DECODE_H_

#include <cstdint>

#include "kernels/quant/types.h"

namespace tessera {

// Codes and scales of one super-block. Sub-blocks are 16 elements: formats with 32-element
// sub-blocks (Q4_K, Q5_K) repeat each scale and min for both halves.
struct KDecoded {
  int8_t q[256];      // codes, offsets that do not depend on the sub-block already applied
  int32_t sc[16];     // integer scale per sub-block
  int32_t m[16];      // integer min per sub-block (0 for formats without mins)
  float d = 0.0f;     // super-block scale
  float dmin = 0.0f;  // super-block scale of the mins
};

// Decodes the super-block at `block` (its GGUF bytes, any alignment).
using KDecodeFn = void (*)(const uint8_t* block, KDecoded* out);

// The decoder for a k-quant type; nullptr for any other type.
KDecodeFn FindKDecoder(GgmlType type);

// The j-th (0..7) 6-bit scale and min of a Q4_K / Q5_K super-block from its 12 scale bytes
// (kquants.h's GetScaleMinK4, out of line: callable from the instruction-set files, which must
// not share inline code with the portable ones; see simd_x86.h).
void ScaleMinK4(const uint8_t* scales, int j, int32_t* sc, int32_t* m);

// Whether sub-block mins enter the canonical term (Q2_K, Q4_K, Q5_K).
bool KQuantHasMins(GgmlType type);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_KQUANT_DECODE_H_
