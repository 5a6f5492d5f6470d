// The fixed-head-dim attention kernels of attention_kernels.h over an f16 KV cache, compiled
// with the AVX-512 flags (which include F16C): each cached row is converted to floats as it is
// loaded (vcvtph2ps, exact), so a decode step reads half the cache bytes of an f32 cache and
// the arithmetic after the load is the f32 kernels'.
// GCC 12's 512-bit conversion intrinsic trips -Wmaybe-uninitialized on its own dummy operand.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "kernels/cpu/attention_kernels.h"

namespace tessera {

void AttendHeadsF16Avx512(const HeadAttentionF16* a, int n) {
  if (a[0].head_dim == 128) {
    if (n == 1) return AttendHeadsFixed<128, 1>(a);
    return AttendHeadsFixed<128, 2>(a);
  }
  switch (n) {
    case 1:
      return AttendHeadsFixed<64, 1>(a);
    case 2:
      return AttendHeadsFixed<64, 2>(a);
    case 3:
      return AttendHeadsFixed<64, 3>(a);
    default:
      return AttendHeadsFixed<64, 4>(a);
  }
}

}  // namespace tessera
