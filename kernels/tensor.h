// Non-owning views of weight tensors as they are stored (GGUF blocks, usually in an mmap).
//
// Dimension order follows GGUF/ggml: ne[0] is the innermost (contiguous) dimension, so a
// weight matrix of shape ne = {cols, rows} is stored row by row, each row `cols` elements
// packed into blocks of its type. Views never own memory; whoever produced `data` (the GGUF
// mmap, a test buffer) must outlive them.
#ifndef TESSERA_KERNELS_TENSOR_H_
#define TESSERA_KERNELS_TENSOR_H_

#include <array>
#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/quant/types.h"

namespace tessera {

inline constexpr int kMaxDims = 4;

struct TensorView {
  GgmlType type = GgmlType::kF32;
  int n_dims = 0;
  std::array<int64_t, kMaxDims> ne = {1, 1, 1, 1};  // unused dims are 1
  const void* data = nullptr;
  int64_t nbytes = 0;

  int64_t n_elems() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

// How the blocks of a row are laid out in memory.
//   kGguf: as GGUF stores them, block after block (every type).
//   kInterleaved8: the CPU backend's layout for Q4_0 and Q4_1 (kernels/quant/interleave.h):
//     each run of eight blocks regrouped so that a 512-bit kernel decodes four blocks per
//     load; the same bytes per row, so strides and row slices are unchanged.
//   kStripes16: the CPU backend's layout for Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K on AVX-512
//     VNNI without AMX
//     (kernels/quant/interleave.h): each run of 16 rows regrouped block by block, so that a
//     512-bit register holds one 4-element group of all 16 rows and the batch's activations
//     multiply it by broadcast; rows come in whole stripes (rows a multiple of 16), the same
//     bytes per row.
enum class WeightLayout { kGguf, kInterleaved8, kStripes16 };
inline constexpr int kStripeRows = 16;  // rows per stripe of kStripes16

// A 2-D quantized weight matrix: `rows` rows of `cols` elements, row r starting at
// data + r * row_bytes. Linear layers compute y = W x, so rows = output features and
// cols = input features (GGUF ne = {cols, rows}).
struct QuantMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_bytes = 0;  // stride between rows; >= bytes of one row (slices may pad)
  const void* data = nullptr;
  WeightLayout layout = WeightLayout::kGguf;

  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes; }
};

// Rows [row0, row0 + rows) and columns [col0, col0 + cols) of `m`, without copying: the view
// keeps m's row stride. Column bounds must fall on block boundaries of m's type (a tensor-
// parallel split of a quantized row cannot cut a block); an interleaved matrix can be cut
// into rows only (its columns are regrouped), a striped one into whole stripes only.
absl::StatusOr<QuantMatrix> SliceMatrix(const QuantMatrix& m, int64_t row0, int64_t rows,
                                        int64_t col0, int64_t cols);

}  // namespace tessera

#endif  // TESSERA_KERNELS_TENSOR_H_
