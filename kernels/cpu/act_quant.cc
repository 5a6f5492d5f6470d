#include "kernels/cpu/act_quant.h"

#include <cmath>
#include <limits>

namespace tessera {
namespace {

// 127 / amax, capped at FLT_MAX: for a block of tiny denormals 127 / amax overflows, and
// 0 * inf would make NaN codes. Capped, such a block quantizes to zeros (an error below
// 127 / FLT_MAX * |x| ~ 4e-37 |x|).
float InverseScale(float amax) {
  return amax != 0.0f ? std::fmin(127.0f / amax, std::numeric_limits<float>::max()) : 0.0f;
}

// Quantizes n floats with one scale; returns d and writes q. Shared by both block sizes.
float QuantizeGroup(const float* x, int n, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = InverseScale(amax);
  for (int i = 0; i < n; ++i) {
    // The clamp only matters for non-finite x; it keeps the conversion defined.
    const float r = std::fmin(std::fmax(x[i] * id, -127.0f), 127.0f);
    q[i] = static_cast<int8_t>(std::nearbyint(r));
  }
  return d;
}

}  // namespace

ActFormat ActFormatFor(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
      return ActFormat::kBlock32;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return ActFormat::kBlock256;
    default:
      return ActFormat::kFloat;
  }
}

int64_t ActRowBytes(ActFormat format, int64_t cols) {
  if (format == ActFormat::kFloat) return cols * static_cast<int64_t>(sizeof(float));  // x itself
  const int64_t bytes = format == ActFormat::kBlock32
                            ? cols / 32 * static_cast<int64_t>(32 + 3 * sizeof(float))
                            : cols / 256 * static_cast<int64_t>(sizeof(ActBlock256));
  return (bytes + 63) / 64 * 64;
}

ActRow32 ViewActRow32(const uint8_t* row, int64_t n_blocks) {
  const auto* d = reinterpret_cast<const float*>(row + 32 * n_blocks);
  return {reinterpret_cast<const int8_t*>(row), d, d + n_blocks,
          reinterpret_cast<const int32_t*>(d + 2 * n_blocks)};
}

void QuantizeActRow32Scalar(const float* x, int64_t n_elems, uint8_t* row) {
  const int64_t n_blocks = n_elems / 32;
  auto* qs = reinterpret_cast<int8_t*>(row);
  auto* d = reinterpret_cast<float*>(row + 32 * n_blocks);
  float* ds = d + n_blocks;
  auto* sums = reinterpret_cast<int32_t*>(ds + n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b, x += 32) {
    int8_t* q = qs + 32 * b;
    d[b] = QuantizeGroup(x, 32, q);
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) sum += q[i];
    ds[b] = d[b] * static_cast<float>(sum);
    sums[b] = sum;
  }
}

void QuantizeActBlock256Scalar(const float* x, int64_t n_elems, ActBlock256* out) {
  for (int64_t b = 0; b < n_elems / 256; ++b, x += 256) {
    ActBlock256& blk = out[b];
    blk.d = QuantizeGroup(x, 256, blk.qs);
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += blk.qs[16 * j + i];
      blk.bsums[j] = static_cast<int16_t>(sum);
    }
  }
}

}  // namespace tessera
