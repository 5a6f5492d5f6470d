// The register-tiled path of MatMulQ (kernels/cpu/matmul.h) for batches of activation rows:
// prefill and large decode batches, where the product is compute-bound.
//
// Layout. The quantized activation rows (ActRow32, act_quant.h) are repacked once per call into
// panels of kGemmPanelRows = 16 rows. Per 32-element block a panel holds
//   8 groups x 64 bytes: group g, lane j = bytes a_j[4g .. 4g + 3] + 128 (unsigned)
//   16 floats d_j, 16 floats ds_j                      (ActRow32's scales, one per lane)
// = kGemmPanelBlockBytes, so one 512-bit load gives four consecutive activation codes of 16
// rows, and a 32-bit weight code group broadcast to all lanes multiplies them with one vpdpbusd
// (unsigned activations x signed weight codes). Padding rows are zeros (d = ds = 0).
// The weights are read as stored (no repacking at load time): a thread decodes a few weight
// rows at a time into int8 codes plus per-block scales in a small per-thread buffer, then runs
// every activation panel over them, so each weight block is decoded once per call.
//
// Blocks are stored in chain-major order (ChainSlot): blocks 0, 8, 16, ... first, then 1, 9,
// 17, ..., the order in which the canonical summation (dot_kernels.h) visits them, so the
// kernels stream through the panels and the decoded weight rows.
//
// Numerics: the integer block sums are exact (the +128 bias comes back as -128 * sum of the
// block's codes, which seeds the accumulator), and each output element is summed in the
// canonical order of dot_kernels.h (the scalar and row-dot kernels' order), with no fused
// multiply-adds. So the result of one (weight row, activation row) pair does not depend on the
// batch size, the row's position in the batch, the tile, the thread count, or on whether this
// path or the row-dot one runs.
#ifndef TESSERA_KERNELS_CPU_GEMM_KERNELS_H_
#define TESSERA_KERNELS_CPU_GEMM_KERNELS_H_

#include <cstdint>

#include "kernels/quant/types.h"

namespace tessera {

inline constexpr int kGemmPanelRows = 16;
inline constexpr int64_t kGemmPanelBlockBytes = 8 * 64 + 2 * 16 * 4;  // 640

// Where block k of n_blocks sits in chain-major order: after the blocks of the chains before
// k % 8 (chain c holds the blocks c, c + 8, ... below n_blocks), at position k / 8 of its own.
// ChainStart(c) is the slot of chain c's first block (ChainStart(8) = n_blocks). Internal
// linkage: used from files with different instruction-set flags (see simd_x86.h).
namespace {  // NOLINT(build/namespaces)
inline int64_t ChainStart(int c, int64_t n_blocks) {
  int64_t start = 0;
  for (int i = 0; i < c; ++i) start += (n_blocks - i + 7) / 8;
  return start;
}
inline int64_t ChainSlot(int64_t k, int64_t n_blocks) {
  return ChainStart(static_cast<int>(k % 8), n_blocks) + k / 8;
}
}  // namespace

// The k-quants' panels (ActBlock256 rows, 256-element super-blocks), same idea: per super-block
//   64 groups x 64 bytes: group g, lane j = bytes a_j[4g .. 4g + 3] + 128 (unsigned)
//   16 floats d_j
//   8 x 64 bytes: pair i, lane j = the int16 sums bsum_j[2i], bsum_j[2i + 1] (for the mins)
// = kKGemmPanelBlockBytes, super-blocks in chain-major order. Padding lanes: codes 0, d 0,
// sums 0.
inline constexpr int64_t kKGemmPanelBlockBytes = 64 * 64 + 16 * 4 + 8 * 64;  // 4672

int64_t KGemmPanelBytes(int64_t n_batch, int64_t n_blocks);
void PackKGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                     uint8_t* panels);

// Bytes of the packed panels for n_batch rows of n_blocks blocks (64-byte multiple).
int64_t GemmPanelBytes(int64_t n_batch, int64_t n_blocks);

// Repacks n_batch quantized rows (ActRow32 rows act_stride bytes apart) into panels (64-byte
// aligned, GemmPanelBytes bytes). Portable code; runs once per call.
void PackGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                    uint8_t* panels);

// Computes y[b * y_stride + r] for weight rows r in [row_begin, row_end) and every b < n_batch.
// w_row(r) = w + r * w_stride. Uses a thread-local decode buffer (thread-safe across threads).
using GemmRowsFn = void (*)(const uint8_t* w, int64_t w_stride, int64_t row_begin,
                            int64_t row_end, int64_t n_blocks, const uint8_t* panels,
                            int64_t n_batch, float* y, int64_t y_stride);

// nullptr where that ISA has no tiled kernel for `type` (the caller keeps the row-dot path).
GemmRowsFn AmxGemmRows(GgmlType type);
GemmRowsFn Avx512VnniGemmRows(GgmlType type);
// Q4_0 / Q4_1 rows in the interleaved layout (kernels/quant/interleave.h); nullptr otherwise.
GemmRowsFn AmxInterleavedGemmRows(GgmlType type);
GemmRowsFn Avx512VnniInterleavedGemmRows(GgmlType type);
GemmRowsFn Avx2GemmRows(GgmlType type);
// The k-quants, on the k-quant panels (gemm_kquant_x86.h).
GemmRowsFn Avx512VnniKGemmRows(GgmlType type);
GemmRowsFn Avx2KGemmRows(GgmlType type);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_GEMM_KERNELS_H_
