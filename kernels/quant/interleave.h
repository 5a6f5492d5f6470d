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

// The striped layout of Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K (WeightLayout::kStripes16).
//
// The interleaved layout still leaves a kernel to reduce each block's products across lanes,
// and at small batches (decode of 2-16 sequences) the tiled GEMM spends half of its time
// decoding weight rows into a buffer that only one panel of activations then reads. The
// striped layout puts the rows, not the elements, across the lanes: a stripe is 16
// consecutive rows (rows 16 s .. 16 s + 15, stored at 16 s * row_bytes), cut into units, one
// per block column k (the 16 rows' block k). With Q the bytes of a block's codes (16 nibble
// bytes for Q4_0 / Q4_1, 32 int8 for Q8_0):
//
//   qs[16 Q]       Q / 4 chunks of 64 bytes; bytes 4 i .. 4 i + 3 of chunk c are row i's
//                  code bytes 4 c .. 4 c + 3. For the 4-bit formats the low nibbles of 32-bit
//                  lane i are then elements 4 c .. 4 c + 3 of row i's block and the high
//                  nibbles elements 16 + 4 c .. 16 + 4 c + 3; for Q8_0 lane i of chunk c is
//                  elements 4 c .. 4 c + 3
//   d[16]          the rows' fp16 scales, row order
//   m[16]          (Q4_1 only) the rows' fp16 minimums
//
// so one load (and for 4 bits two masks) gives a 4-element group of all 16 rows, which
// vpdpbusd multiplies by the matching four activation bytes of one sequence broadcast to all
// lanes: no reduction across lanes, no decode pass, and each group serves every sequence of
// the batch. The units of a stripe are stored in the canonical chain order of
// kernels/cpu/dot_kernels.h (chain c = blocks c, c + 8, c + 16, ... for c = 0..7, chain after
// chain), so a kernel that sums chain by chain reads the stripe front to back. A unit is
// exactly the bytes of its 16 blocks (288 for Q4_0, 320 for Q4_1, 544 for Q8_0), so a stripe
// is 16 rows' bytes. Nothing within a block is rounded or reordered: the kernels compute the
// same integer block dots and canonical sums.
//
// The k-quants follow the same scheme with a 256-element super-block per unit. Q4_K (2304
// bytes): its 140 bytes after d and dmin (the 12 packed scale bytes, then qs) as 35 chunks in
// block order, then d[16] and dmin[16]; a kernel unpacks the 16 rows' scales from chunks 0..2
// and reads 4-element groups from the code chunks as for Q4_0. Q5_K (2816 bytes) likewise, its
// 172 bytes after d and dmin being the scales, qh and qs. Q6_K (3360 bytes): its 208
// bytes before d (ql, qh, the int8 scales) as 52 chunks in the order StripeChunk gives, then
// d[16].

// Whether `type` has the striped layout (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K).
bool StripeSupported(GgmlType type);

// Bytes of a unit's codes (16 Q); d[16] follows, then m[16].
int StripeCodeBytes(GgmlType type);

// Where a supported type's block bytes go in a unit: code pieces c < code_pieces (bytes
// code_start + 4 c .. + 3 of the block) to chunk StripeChunk(type, c), row i's at 4 i in it;
// fp16 fields f < fields (bytes field_start + 2 f, + 1) to 16 * 4 * code_pieces + 32 f, row i's
// at 2 i.
struct StripeBlockLayout {
  int block_bytes;
  int code_start;
  int code_pieces;
  int field_start;
  int fields;
};
StripeBlockLayout GetStripeBlockLayout(GgmlType type);

// The 64-byte chunk of a unit that holds code bytes 4 c .. 4 c + 3 of each row's block: c for
// every type but Q6_K, whose chunks are in the order its kernel reads them (scales, then per
// half h and column group: ql's A and B chunks and qh's; stripes_kquant_avx512vnni.cc).
int StripeChunk(GgmlType type, int c);

// The slot (unit index within its stripe) of block column k of n_blocks, in chain order.
int64_t StripeSlot(int64_t k, int64_t n_blocks);

// kStripeRows GGUF rows (src, src_stride bytes apart, n_blocks blocks each) into one stripe at
// dst (kStripeRows rows' bytes), and row i < kStripeRows of the stripe at src back to GGUF.
// type must be supported (StripeSupported).
void StripeRows(GgmlType type, const uint8_t* src, int64_t src_stride, int64_t n_blocks,
                uint8_t* dst);
void UnstripeRow(GgmlType type, const uint8_t* stripe, int64_t n_blocks, int i, uint8_t* dst);
// All kStripeRows rows of the stripe back to GGUF (row i at dst + i * dst_stride), reading the
// stripe once.
void UnstripeRows(GgmlType type, const uint8_t* stripe, int64_t n_blocks, uint8_t* dst,
                  int64_t dst_stride);

// Row r of m in the GGUF layout (its row bytes), whatever m's layout.
void ReadGgufRow(const QuantMatrix& m, int64_t r, uint8_t* dst);

// Row r of m as floats (cols of them), whatever m's layout.
void DequantizeMatrixRow(const QuantMatrix& m, int64_t r, float* out);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_INTERLEAVE_H_
