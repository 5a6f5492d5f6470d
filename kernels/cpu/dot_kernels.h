// The per-instruction-set kernel tables behind MatMulQ (kernels/cpu/matmul.h).
//
// A RowDotFn dots one weight row (n_blocks blocks of its GGUF type, straight from the weight
// memory) with n_act <= kMaxActRows activation rows in the format ActFormatFor(type) gives
// (kernels/cpu/act_quant.h):
//
//   y[b * y_stride] = sum_k w[k] * x_b[k]      for b < n_act, x_b at act + b * act_stride
//
// Doing several activation rows per call decodes each weight block once for all of them, so a
// batch costs one pass over the weights. For F32/F16/BF16 weights n_blocks is the number of
// elements and the activations are the float rows themselves.
//
// Summation order (batch invariance). Every path of MatMulQ (these row-dot kernels for any
// n_act, the tiled kernels of gemm_kernels.h, any thread count) computes each output element
// in one canonical order, so a row's result is the same bits whether it is alone or batched,
// at any position, with any company. For the quantized formats:
//   t_k   = fl(fl(d_w,k * d_a,k) * float(dot_k)) + fl(off_w,k * ds_k)     (no fused multiply-add)
//   chain c = (((+0 + t_c) + t_(c+8)) + t_(c+16)) + ...                    (c = 0..7)
//   y     = ((c0 + c4) + (c2 + c6)) + ((c1 + c5) + (c3 + c7))               (CombineChains)
// where k runs over blocks and dot_k is the block's exact int32 integer dot product:
//   - 32-element formats: dot_k = codes . a (codes without offset), off_w = Q4_0's -8 d_w,
//     Q5_0's -16 d_w, Q4_1/Q5_1's m; Q8_0 has no offset term (adding fl(0 * ds) = +-0 to t_k
//     or to a chain could only turn a -0 into +0, and a chain that starts at +0 is never -0,
//     so leaving it out changes no bits).
//   - k-quants (256-element super-blocks): dot_k = sum_j sc_j (q . a)_j with the format's
//     constant code offsets folded in exactly, off_w * ds becomes -fl(fl(dmin * d_a) * float(
//     sum_j m_j bsum_j)) for the formats with mins (Q2_K, Q4_K, Q5_K).
// Why this order: eight chains are eight SIMD lanes, so a decode matvec (one activation row,
// memory-bound) adds eight blocks with one vector add (no serial float latency per block),
// while the integer dots stay exact, so no instruction set can round them differently. The
// scalar, AVX2 and AVX-512 VNNI kernels all follow it: for the quantized formats they agree
// bit for bit with each other, not only across batch shapes.
// Float weights (F32/F16/BF16, activations used as floats): the order is 16 lanes of fused
// multiply-adds (element i to lane i mod 16, in steps of 16 elements, then one more step of 8
// into lanes 0..7 if 8 or more remain), lanes l and l + 8 added, CombineChains over those 8,
// then the last cols mod 8 products added in order (product rounded, then added). Each row has
// its own accumulators, so this too does not depend on the batch.
//
// Each ISA lives in its own files (*_avx2.cc, *_avx512vnni.cc, compiled with that ISA's flags)
// and says for which types it has a kernel; the dispatcher falls back ISA by ISA down to the
// scalar table, which covers every type. Nothing in the ISA files may be called before the
// dispatcher has checked the CPU.
#ifndef TESSERA_KERNELS_CPU_DOT_KERNELS_H_
#define TESSERA_KERNELS_CPU_DOT_KERNELS_H_

#include <cstdint>

#include "kernels/quant/types.h"

namespace tessera {

inline constexpr int kMaxActRows = 4;

// The number of summation chains of the canonical order above.
inline constexpr int kSumChains = 8;

// The fixed tree over the chain sums (the same adds as simd_x86.h's HorizontalSum). Internal
// linkage for the reason simd_x86.h gives: files with different instruction-set flags use it.
namespace {  // NOLINT(build/namespaces)
inline float CombineChains(const float c[kSumChains]) {
  return ((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]));
}
}  // namespace

using RowDotFn = void (*)(const uint8_t* w_row, int64_t n_blocks, const uint8_t* act,
                          int64_t act_stride, int n_act, float* y, int64_t y_stride);

// nullptr where that ISA has no kernel of its own for `type`.
RowDotFn ScalarRowDot(GgmlType type);
RowDotFn Avx2RowDot(GgmlType type);
RowDotFn Avx512VnniRowDot(GgmlType type);

// Q4_0 / Q4_1 rows in the interleaved layout (kernels/quant/interleave.h); nullptr for other
// types. Only AVX-512 VNNI has them: MatMulQ runs the others' kernels on deinterleaved copies.
RowDotFn Avx512VnniInterleavedRowDot(GgmlType type);
// Q4_0 / Q4_1 / Q8_0 matrices in the striped layout (kernels/quant/interleave.h): rows
// [row_begin, row_end) (whole stripes: multiples of kStripeRows) of the matrix at w (row_bytes
// per row) against n_batch activation rows (ActRow32, act_stride apart), for any n_batch:
//   y[b * y_stride + r] = sum_k w_r[k] * x_b[k]
// in the canonical order above. nullptr for other types. Only AVX-512 VNNI has them: MatMulQ
// runs the other instruction sets' kernels on unstriped copies.
using StripeRowsFn = void (*)(const uint8_t* w, int64_t row_bytes, int64_t row_begin,
                              int64_t row_end, int64_t n_blocks, const uint8_t* act,
                              int64_t act_stride, int64_t n_batch, float* y, int64_t y_stride);
StripeRowsFn Avx512VnniStripeRows(GgmlType type);
// The k-quant part of Avx512VnniStripeRows (Q4_K, Q5_K, Q6_K; stripes_kquant_avx512vnni.cc).
StripeRowsFn Avx512VnniKQuantStripeRows(GgmlType type);
// interleave.h's UnstripeRows with AVX-512 (16 x 16 dword transposes), the same bytes.
void UnstripeRowsAvx512(GgmlType type, const uint8_t* stripe, int64_t n_blocks, uint8_t* dst,
                        int64_t dst_stride);
// The k-quant halves of the tables above (their own files, to keep files short).
RowDotFn ScalarKQuantRowDot(GgmlType type);
RowDotFn Avx2KQuantRowDot(GgmlType type);
RowDotFn Avx512VnniKQuantRowDot(GgmlType type);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_DOT_KERNELS_H_
