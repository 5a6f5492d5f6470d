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

using RowDotFn = void (*)(const uint8_t* w_row, int64_t n_blocks, const uint8_t* act,
                          int64_t act_stride, int n_act, float* y, int64_t y_stride);

// nullptr where that ISA has no kernel of its own for `type`.
RowDotFn ScalarRowDot(GgmlType type);
RowDotFn Avx2RowDot(GgmlType type);
RowDotFn Avx512VnniRowDot(GgmlType type);

// The k-quant halves of the tables above (their own files, to keep files short).
RowDotFn ScalarKQuantRowDot(GgmlType type);
RowDotFn Avx2KQuantRowDot(GgmlType type);
RowDotFn Avx512VnniKQuantRowDot(GgmlType type);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_DOT_KERNELS_H_
