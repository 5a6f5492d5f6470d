// The interleaved row layout of Q4_0 and Q4_1 (WeightLayout::kInterleaved8, kernels/tensor.h).
//
// In GGUF a 4-bit block is its fp16 scale(s) followed by 16 bytes of nibbles (element e < 16 in
// the low nibble of byte e, element e + 16 in the high nibble). A kernel reading that layout
// spends most of its instructions gathering the scales of scattered blocks and splitting each
// block's nibbles; at batch 1 it runs out of issue slots before it runs out of memory
// bandwidth. The interleaved layout regroups each run of eight blocks (256 elements) of a row:
//
//   qs[128]        two 64-byte chunks c = 0, 1; byte k of chunk c holds in its low nibble
//                  the code of element (k mod 32) of block 4c + k / 32, and in its high nibble
//                  the code of element (k mod 32) of block 4c + 2 + k / 32
//   d[8]           the eight fp16 scales, block order
//   m[8]           (Q4_1 only) the eight fp16 minimums, block order
//
// so one 512-bit load and two masks give four blocks' codes in element order, each pair of
// blocks lined up with 64 contiguous bytes of the quantized activations, and the scales load
// as one vector. A group is exactly the bytes of its eight blocks (144 for Q4_0, 160 for
// Q4_1). The last r = n_blocks mod 8 blocks of a row (the tail) keep their nibble bytes but
// gather their scales the same way:
//
//   qs[16 r]       block j's 16 bytes of nibbles (GGUF order) at 16 j
//   d[r]           fp16, block order
//   m[r]           (Q4_1 only)
//
// so the tail too loads its scales as one (masked) vector instead of r scattered ones; r
// blocks' bytes. Nothing is rounded or reordered within a block, so the kernels compute the
// same integer block dots and the same canonical sums (kernels/cpu/dot_kernels.h) from either
// layout, bit for bit.
#ifndef TESSERA_KERNELS_QUANT_INTERLEAVE_H_
#define TESSERA_KERNELS_QUANT_INTERLEAVE_H_

#include <cstdint>

#include "kernels/quant/types.h"
#include "kernels/tensor.h"

namespace tessera {

inline constexpr int kInterleaveBlocks = 8;  // blocks per interleaved group
// Bytes of a group's codes; its fp16 field f (d = 0, m = 1) follows at kInterleavedCodeBytes +
// 16 f (block j's at + 2 j).
inline constexpr int kInterleavedCodeBytes = 128;

// Whether `type` has the interleaved layout (Q4_0, Q4_1).
bool InterleaveSupported(GgmlType type);

// One row of n_blocks blocks from GGUF to interleaved (Interleave) and back (Deinterleave);
// src and dst do not overlap and hold the row's n_blocks * block bytes. type must be supported.
void InterleaveRow(GgmlType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst);
void DeinterleaveRow(GgmlType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst);

// Row r of m as floats (cols of them), whatever m's layout.
void DequantizeMatrixRow(const QuantMatrix& m, int64_t r, float* out);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_INTERLEAVE_H_
