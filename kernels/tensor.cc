#include "kernels/tensor.h"

#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<QuantMatrix> SliceMatrix(const QuantMatrix& m, int64_t row0, int64_t rows,
                                        int64_t col0, int64_t cols) {
  const QuantTraits* traits = FindQuantTraits(m.type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot slice a ", GgmlTypeName(m.type),
                                                   " matrix: type not supported"));
  }
  if (row0 < 0 || rows < 1 || row0 > m.rows - rows || col0 < 0 || cols < 1 ||
      col0 > m.cols - cols) {
    return absl::OutOfRangeError(absl::StrCat("slice rows [", row0, ", ", row0 + rows,
                                              ") cols [", col0, ", ", col0 + cols,
                                              ") is outside a ", m.rows, " x ", m.cols,
                                              " matrix"));
  }
  if (col0 % traits->block_elems != 0 || cols % traits->block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice columns [", col0, ", ", col0 + cols, ") do not fall on ", traits->name,
        " block boundaries (", traits->block_elems, " elements per block)"));
  }
  if (m.layout != WeightLayout::kGguf && (col0 != 0 || cols != m.cols)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice columns [", col0, ", ", col0 + cols, ") of an interleaved or striped ",
        traits->name, " matrix: only whole rows of the CPU's layouts can be sliced"));
  }
  if (m.layout == WeightLayout::kStripes16 &&
      (row0 % kStripeRows != 0 || rows % kStripeRows != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slice rows [", row0, ", ", row0 + rows, ") of a striped ", traits->name,
        " matrix: only whole stripes of ", kStripeRows, " rows can be sliced"));
  }
  QuantMatrix out = m;
  out.rows = rows;
  out.cols = cols;
  out.data = m.row(row0) + col0 / traits->block_elems * traits->block_bytes;
  return out;
}

}  // namespace tessera
