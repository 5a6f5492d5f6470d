// AVX-512 VNNI kernels (256-bit vectors, AVX512VL encoding) for the 32-element block formats;
// the k-quants are in kquants_avx512vnni.cc, the float formats use the AVX2 kernels.
//
// Trick: vpdpbusd multiplies unsigned bytes by signed bytes and adds groups of four into int32
// lanes in one instruction, without the int16 saturation of vpmaddubsw, so the block's integer
// dot product is exact for any codes 0..255. Q8_0 feeds w + 128 (w xor 0x80) as the unsigned
// operand and subtracts 128 * sum(a) from the block's integer dot. Q5's fifth bits are added to the nibbles with a byte mask straight from
// the 32-bit qh (vpaddb under mask). The float side is row_dot_x86.h's, shared with AVX2: the
// integer block dots are the same, so results equal the AVX2 and scalar kernels' bit for bit.
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/row_dot_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {

RowDotFn Avx512VnniRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return Block32Entry<Q4_0>;
    case GgmlType::kQ4_1:
      return Block32Entry<Q4_1>;
    case GgmlType::kQ5_0:
      return Block32Entry<Q5_0>;
    case GgmlType::kQ5_1:
      return Block32Entry<Q5_1>;
    case GgmlType::kQ8_0:
      return Block32Entry<Q8_0>;
    default:
      return Avx512VnniKQuantRowDot(type);
  }
}

}  // namespace tessera
