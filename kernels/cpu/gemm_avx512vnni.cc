// AVX-512 VNNI tiled kernels (gemm_kernels.h) for the 32-element block formats: 512-bit
// vectors, one per 16-row activation panel; tiles of 4 weight rows x 2 panels (8 int32 block
// accumulators + 8 float sums in registers).
//
// Trick: vpdpbusd multiplies the panel's unsigned bytes (activation + 128) by the broadcast
// signed weight codes and adds groups of four into the 16 lanes, one lane per activation row,
// exactly; seeding each block's accumulator with -128 * sum(codes) removes the bias. Every
// weight code here is in [-128, 127] (Q4/Q5 codes 0..31, Q8_0 its int8 values).
#include <immintrin.h>

#include <cstddef>

#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_kquant_x86.h"
#include "kernels/cpu/gemm_ops_avx512vnni.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

constexpr int kRows = 4, kPanels = 2;

}  // namespace

GemmRowsFn Avx512VnniGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return GemmRows<Q4_0, kRows, kPanels, SelectTile<Ops512, Q4_0, kRows, kPanels>>;
    case GgmlType::kQ4_1:
      return GemmRows<Q4_1, kRows, kPanels, SelectTile<Ops512, Q4_1, kRows, kPanels>>;
    case GgmlType::kQ5_0:
      return GemmRows<Q5_0, kRows, kPanels, SelectTile<Ops512, Q5_0, kRows, kPanels>>;
    case GgmlType::kQ5_1:
      return GemmRows<Q5_1, kRows, kPanels, SelectTile<Ops512, Q5_1, kRows, kPanels>>;
    case GgmlType::kQ8_0:
      return GemmRows<Q8_0Signed, kRows, kPanels, SelectTile<Ops512, Q8_0Signed, kRows, kPanels>>;
    default:
      return nullptr;
  }
}

// The k-quants (gemm_kquant_x86.h): the same 4 x 2 tiles.
GemmRowsFn Avx512VnniInterleavedGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return GemmRows<Q4_0, kRows, kPanels, SelectTile<Ops512, Q4_0, kRows, kPanels>,
                      DecodeGroup<Q4_0, kRows, InterleavedBlocks<Q4_0>>>;
    case GgmlType::kQ4_1:
      return GemmRows<Q4_1, kRows, kPanels, SelectTile<Ops512, Q4_1, kRows, kPanels>,
                      DecodeGroup<Q4_1, kRows, InterleavedBlocks<Q4_1>>>;
    default:
      return nullptr;
  }
}

GemmRowsFn Avx512VnniKGemmRows(GgmlType type) { return KGemmRows<Ops512, kRows, kPanels>(type); }

}  // namespace tessera
