// The register-tiled path of MatMulQ (kernels/cpu/gemm_kernels.h), used for batches of at
// least MatMulOptions::gemm_min_batch rows, for the 32-element block formats on every
// instruction set this CPU has, odd shapes, batch sizes around the threshold and the 16-row
// panels, and 1..3 threads.
//
// What is checked:
//  - against a float64 reference over the reference-dequantized weights and the unquantized
//    activations, with the bound of tests/kernels/matmul_test.cc (activation rounding
//    sum_k |w_k| max|x_block| / 254 plus 1e-6 (n_blocks + 8) sum |w x'| of float32 error);
//  - bit for bit against the scalar kernel (dot_scalar.cc): the tiled kernels promise the
//    scalar kernel's per-element float order, so any reordering, fused multiply-add or wrong
//    lane shows up as a mismatch;
//  - batch invariance: one activation row gives bit-identical outputs at any position of
//    batches of any size and content, on either side of the threshold, and equal to running
//    it alone on the scalar kernel (all paths follow the canonical order of dot_kernels.h;
//    batch_invariance_test.cc covers every weight type).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/matmul_testutil.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

struct TestMatrix {
  std::vector<uint8_t> bytes;
  QuantMatrix view;
};

// Random weights: floats through the reference quantizer, or raw random blocks (every code,
// including Q8_0's -128) with finite random scales. Rows are padded by pad_bytes.
TestMatrix MakeWeights(const QuantTraits& traits, int64_t rows, int64_t cols, bool raw,
                       int64_t pad_bytes, std::mt19937* rng) {
  const int64_t row_bytes = *RowBytes(traits, cols);
  const int64_t stride = row_bytes + pad_bytes;
  TestMatrix m;
  m.bytes.assign(static_cast<size_t>(rows * stride + 1), 0xCD);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = m.bytes.data() + r * stride;
    if (!raw) {
      for (float& v : row) v = normal(*rng);
      traits.quantize_ref(row.data(), dst, cols);
      continue;
    }
    for (int64_t i = 0; i < row_bytes; ++i) dst[i] = static_cast<uint8_t>(byte(*rng));
    for (int64_t blk = 0; blk < row_bytes / traits.block_bytes; ++blk) {
      for (size_t off : ScaleOffsets(traits.type)) {
        const fp16_t h = FloatToFp16(uniform(*rng) * 0.05f);
        std::memcpy(dst + blk * traits.block_bytes + off, &h, 2);
      }
    }
  }
  m.view.type = traits.type;
  m.view.rows = rows;
  m.view.cols = cols;
  m.view.row_bytes = stride;
  m.view.data = m.bytes.data();
  return m;
}

// Mostly normal values, some all-zero blocks, occasional outliers.
std::vector<float> MakeActivations(int64_t n, int64_t cols, std::mt19937* rng) {
  std::vector<float> x(static_cast<size_t>(n * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  for (float& v : x) v = normal(*rng);
  for (int64_t i = 0; i < n * cols; i += 32) {
    const int p = pick(*rng);
    if (p < 5) std::fill(x.begin() + i, x.begin() + i + 32, 0.0f);
    if (p >= 95) x[static_cast<size_t>(i)] *= 30.0f;
  }
  return x;
}

struct Reference {
  std::vector<double> y, act_err, abs_dot;
  double float_rel = 0;
  double Bound(size_t i) const {
    return act_err[i] * (1 + 1e-6) + float_rel * (abs_dot[i] + act_err[i]) + 1e-30;
  }
};

Reference ComputeReference(const QuantTraits& traits, const QuantMatrix& w, const float* x,
                           int64_t n_batch) {
  Reference ref;
  const size_t n = static_cast<size_t>(n_batch * w.rows);
  ref.y.assign(n, 0.0);
  ref.act_err.assign(n, 0.0);
  ref.abs_dot.assign(n, 0.0);
  ref.float_rel = 1e-6 * static_cast<double>(w.cols / 32 + 8);
  std::vector<float> wf(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    traits.dequantize_ref(w.row(r), wf.data(), w.cols);
    for (int64_t b = 0; b < n_batch; ++b) {
      const float* xb = x + b * w.cols;
      double dot = 0, abs_dot = 0, act_err = 0;
      for (int64_t k0 = 0; k0 < w.cols; k0 += 32) {
        double amax = 0, sum_abs_w = 0;
        for (int64_t k = k0; k < k0 + 32; ++k) {
          dot += static_cast<double>(wf[k]) * xb[k];
          abs_dot += std::fabs(static_cast<double>(wf[k]) * xb[k]);
          amax = std::max(amax, std::fabs(static_cast<double>(xb[k])));
          sum_abs_w += std::fabs(static_cast<double>(wf[k]));
        }
        act_err += sum_abs_w * amax / 254.0;
      }
      const size_t i = static_cast<size_t>(b * w.rows + r);
      ref.y[i] = dot;
      ref.act_err[i] = act_err;
      ref.abs_dot[i] = abs_dot;
    }
  }
  return ref;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

class GemmTest : public testing::TestWithParam<GgmlType> {
 protected:
  const QuantTraits& traits() const { return *FindQuantTraits(GetParam()); }
};

struct Shape {
  int64_t rows;
  int64_t col_blocks;
  int64_t batch;
  int threads;
};
// Rows: not multiples of the tiles (4 and 2 rows) nor of the 16-row thread chunks; blocks on
// both sides of 8; batches around the threshold and the 16-row panels (partial panels, odd
// panel counts against the 2-panel tiles).
constexpr Shape kShapes[] = {
    {1, 1, 8, 1},   {5, 3, 9, 2},    {7, 8, 15, 3},   {33, 13, 16, 2}, {34, 1, 17, 3},
    {130, 3, 31, 2}, {67, 5, 33, 1}, {19, 2, 48, 3},  {40, 9, 64, 2},  {3, 4, 1, 1},
    {6, 2, 2, 2},   {11, 3, 7, 3},
};

TEST_P(GemmTest, MatchesFloat64ReferenceAndTheScalarKernelBitForBit) {
  std::mt19937 rng(4321 + static_cast<int>(GetParam()));
  int checked = 0;
  for (const Shape& s : kShapes) {
    for (bool raw : {false, true}) {
      const int64_t cols = s.col_blocks * 32;
      const TestMatrix w = MakeWeights(traits(), s.rows, cols, raw, (s.rows % 2) * 6, &rng);
      const std::vector<float> x = MakeActivations(s.batch, cols, &rng);
      const Reference ref = ComputeReference(traits(), w.view, x.data(), s.batch);
      const std::vector<float> y_scalar = RunMatMul(w.view, x, s.batch, 1, CpuIsa::kScalar, 1);
      for (CpuIsa isa : AvailableIsas(/*simd_only=*/true)) {
        // gemm_min_batch 1: the tiled path even for the batches below the default threshold.
        const std::vector<float> y = RunMatMul(w.view, x, s.batch, s.threads, isa, 1);
        for (size_t i = 0; i < y.size(); ++i) {
          const std::string where = std::to_string(s.rows) + "x" + std::to_string(cols) +
                                    " batch " + std::to_string(s.batch) + " threads " +
                                    std::to_string(s.threads) + " isa " +
                                    std::string(CpuIsaName(isa)) + (raw ? " raw" : "") +
                                    " output (" + std::to_string(i / s.rows) + ", " +
                                    std::to_string(i % s.rows) + ")";
          ASSERT_LE(std::fabs(y[i] - ref.y[i]), ref.Bound(i))
              << where << ": got " << y[i] << " want " << ref.y[i];
          ASSERT_TRUE(SameBits(y[i], y_scalar[i]))
              << where << ": tiled " << y[i] << " scalar kernel " << y_scalar[i];
          ++checked;
        }
      }
    }
  }
  if (!AvailableIsas(/*simd_only=*/true).empty()) {
    EXPECT_GT(checked, 0);
  }
}

// One activation row (and one weight matrix) at several positions of batches of several sizes
// with different company, on the default threshold: the output row is the same bits
// everywhere (tiled path or, below the threshold, row-dot kernels), and the same as the row
// alone on the scalar kernel.
TEST_P(GemmTest, RowOutputDoesNotDependOnBatchPositionOrSize) {
  std::mt19937 rng(77 + static_cast<int>(GetParam()));
  const int64_t rows = 37, cols = 11 * 32;
  const TestMatrix w = MakeWeights(traits(), rows, cols, /*raw=*/true, 0, &rng);
  const std::vector<float> probe = MakeActivations(1, cols, &rng);
  const std::vector<float> alone_scalar = RunMatMul(w.view, probe, 1, 1, CpuIsa::kScalar, 1);
  struct Placement {
    int64_t batch, position;
    int threads;
  };
  constexpr Placement kPlacements[] = {{1, 0, 1},   {3, 2, 2},   {7, 6, 3},   {8, 0, 2},
                                       {8, 7, 1},   {16, 15, 3}, {17, 16, 2}, {40, 21, 3},
                                       {64, 33, 2}, {64, 63, 1}};
  for (CpuIsa isa : AvailableIsas(/*simd_only=*/true)) {
    for (const Placement& pl : kPlacements) {
      std::vector<float> x = MakeActivations(pl.batch, cols, &rng);
      std::copy(probe.begin(), probe.end(), x.begin() + pl.position * cols);
      const std::vector<float> y = RunMatMul(w.view, x, pl.batch, pl.threads, isa, kDefaultGemmMinBatch);
      for (int64_t r = 0; r < rows; ++r) {
        const float got = y[static_cast<size_t>(pl.position * rows + r)];
        const std::string where = std::string(CpuIsaName(isa)) + " batch " +
                                  std::to_string(pl.batch) + " position " +
                                  std::to_string(pl.position) + " row " + std::to_string(r);
        ASSERT_TRUE(SameBits(got, alone_scalar[static_cast<size_t>(r)]))
            << where << ": " << got << " vs alone " << alone_scalar[static_cast<size_t>(r)];
      }
    }
  }
}

TEST_P(GemmTest, ThresholdSwitchesPathWithoutChangingABit) {
  std::mt19937 rng(5 + static_cast<int>(GetParam()));
  const int64_t rows = 21, cols = 6 * 32;
  const TestMatrix w = MakeWeights(traits(), rows, cols, /*raw=*/false, 0, &rng);
  for (int64_t batch : {kDefaultGemmMinBatch - 1, kDefaultGemmMinBatch}) {
    const std::vector<float> x = MakeActivations(batch, cols, &rng);
    const Reference ref = ComputeReference(traits(), w.view, x.data(), batch);
    for (CpuIsa isa : AvailableIsas(/*simd_only=*/true)) {
      const std::vector<float> tiled = RunMatMul(w.view, x, batch, 2, isa, 1);
      const std::vector<float> row_dot = RunMatMul(w.view, x, batch, 2, isa, batch + 1);
      const std::vector<float> dflt = RunMatMul(w.view, x, batch, 2, isa, kDefaultGemmMinBatch);
      const std::vector<float>& expected = batch >= kDefaultGemmMinBatch ? tiled : row_dot;
      for (size_t i = 0; i < tiled.size(); ++i) {
        ASSERT_TRUE(SameBits(dflt[i], expected[i])) << "batch " << batch << " output " << i;
        ASSERT_TRUE(SameBits(tiled[i], row_dot[i]))
            << "batch " << batch << " output " << i << ": tiled " << tiled[i] << " row-dot "
            << row_dot[i];
        ASSERT_LE(std::fabs(tiled[i] - ref.y[i]), ref.Bound(i)) << "batch " << batch;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Block32Types, GemmTest,
                         testing::Values(GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                                         GgmlType::kQ5_1, GgmlType::kQ8_0),
                         TypeName);

}  // namespace
}  // namespace tessera
