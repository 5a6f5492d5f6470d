// AVX-512 VNNI kernels for the k-quants: the formats of kquants_x86.h with the scaled dot
// fused by vpdpwssd (int16 pairs times int16 scales added into int32 lanes in one
// instruction, replacing AVX2's vpmaddwd + vpaddd; same exact integers).
#include <immintrin.h>

#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/kquants_x86.h"
#include "kernels/cpu/row_dot_x86.h"

namespace tessera {
namespace {

struct VnniOps {
  static __m256i AddScaledDot(__m256i sumi, __m256i codes, const int8_t* a, __m256i sc) {
    return _mm256_dpwssd_epi32(sumi, _mm256_maddubs_epi16(codes, Load256(a)), sc);
  }
};

}  // namespace

RowDotFn Avx512VnniKQuantRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return KEntry<Q2_K<VnniOps>>;
    case GgmlType::kQ3_K:
      return KEntry<Q3_K<VnniOps>>;
    case GgmlType::kQ4_K:
      return KEntry<Q45_K<VnniOps, false>>;
    case GgmlType::kQ5_K:
      return KEntry<Q45_K<VnniOps, true>>;
    case GgmlType::kQ6_K:
      return KEntry<Q6_K<VnniOps>>;
    default:
      return nullptr;
  }
}

}  // namespace tessera
