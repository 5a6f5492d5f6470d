// AVX2 kernels for the k-quants: the formats of kquants_x86.h with the AVX2 scaled dot
// (vpmaddubsw, then vpmaddwd against the scales, then an int32 add).
#include <immintrin.h>

#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/kquants_x86.h"
#include "kernels/cpu/row_dot_x86.h"

namespace tessera {
namespace {

struct Avx2Ops {
  static __m256i AddScaledDot(__m256i sumi, __m256i codes, const int8_t* a, __m256i sc) {
    return _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, Load256(a)), sc));
  }
};

}  // namespace

RowDotFn Avx2KQuantRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return KEntry<Q2_K<Avx2Ops>>;
    case GgmlType::kQ3_K:
      return KEntry<Q3_K<Avx2Ops>>;
    case GgmlType::kQ4_K:
      return KEntry<Q45_K<Avx2Ops, false>>;
    case GgmlType::kQ5_K:
      return KEntry<Q45_K<Avx2Ops, true>>;
    case GgmlType::kQ6_K:
      return KEntry<Q6_K<Avx2Ops>>;
    default:
      return nullptr;
  }
}

}  // namespace tessera
