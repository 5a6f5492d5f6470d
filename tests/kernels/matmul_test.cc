// MatMulQ against a float64 reference built from the reference dequantizers
// (FindQuantTraits(type)->dequantize_ref) and the unquantized float activations, for every
// weight type and every instruction set this CPU has, on odd shapes and several thread counts.
//
// Error bound. The kernels use the weights exactly (integer codes times their scales) but
// quantize each activation block (32 or 256 values) to x' = d * q with d = max|x_block| / 127
// and |x - x'| <= d / 2. Hence, per output,
//   |y - y_ref| <= sum_k |w_k| * max|x_block(k)| / 254                 (activation rounding)
//                + 1e-6 * (n_blocks + 8) * sum_k |w_k x'_k|             (float32 arithmetic)
// where sum_k |w_k x'_k| <= sum_k |w_k x_k| + the first term. The second term covers the
// float32 scale products, the per-block offset terms (Q4_0's -8 d, the mins) and the float32
// accumulation over n_blocks blocks: each adds a few roundings of 2^-24 relative to its terms,
// and 1e-6 leaves a margin of ~16x for cancellation between a block's scaled codes and its
// offset. For F32/F16/BF16 weights only the second term applies (n_blocks = cols). The bound
// is tight enough that a wrong nibble order, scale, offset or sub-block gives errors far
// above it (the typical |y| is ~ sqrt(cols) while the bound is ~ cols / 254; changing Q4_0's
// offset from -8 to -7.9 or Q6_K's from -32 to -16 fails every test below), and the
// ExactWhenActivationsAreRepresentable test removes the first term altogether.
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/matmul_testutil.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

// Columns for size class 1..5: 1..5 super-blocks for the k-quants; for the 32-element
// formats block counts on both sides of the kernels' groups of 8 blocks (1, 3, 8, 13, 40);
// odd element counts for the float formats (vectors of 8 and 16 plus a tail).
int64_t ColsFor(const QuantTraits& traits, int size_class) {
  constexpr int64_t kFloatCols[] = {1, 7, 32, 67, 160};
  constexpr int64_t kBlocks32[] = {1, 3, 8, 13, 40};
  if (IsFloatType(traits.type)) return kFloatCols[size_class - 1];
  if (traits.block_elems == 32) return kBlocks32[size_class - 1] * 32;
  return size_class * traits.block_elems;
}

// Offsets of the fp16 scale fields in one block (random raw blocks get finite values there).
// A weight matrix owned by the test. Rows are `stride` bytes apart (>= the row's bytes).
struct TestMatrix {
  std::vector<uint8_t> bytes;
  QuantMatrix view;
};

// Random weights: either floats quantized with the reference quantizer, or random raw bytes
// (every code pattern, any packing of scales) with finite random fp16 scales.
TestMatrix MakeWeights(const QuantTraits& traits, int64_t rows, int64_t cols, bool raw,
                       int64_t pad_bytes, std::mt19937* rng) {
  const int64_t row_bytes = *RowBytes(traits, cols);
  const int64_t stride = row_bytes + pad_bytes;
  TestMatrix m;
  m.bytes.assign(static_cast<size_t>(rows * stride + 1), 0xAB);  // +1: rows==0 still has data
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = m.bytes.data() + r * stride;
    if (!raw) {
      const float row_scale = std::exp2(static_cast<float>(byte(*rng) % 7) - 3.0f);
      for (float& v : row) v = normal(*rng) * row_scale;
      traits.quantize_ref(row.data(), dst, cols);
      continue;
    }
    for (int64_t i = 0; i < row_bytes; ++i) dst[i] = static_cast<uint8_t>(byte(*rng));
    for (int64_t blk = 0; blk < row_bytes / traits.block_bytes; ++blk) {
      uint8_t* b = dst + blk * traits.block_bytes;
      if (traits.type == GgmlType::kF32) {
        const float f = normal(*rng);
        std::memcpy(b, &f, 4);
        continue;
      }
      if (traits.type == GgmlType::kF16 || traits.type == GgmlType::kBF16) {
        const float f = normal(*rng) * 4.0f;
        const uint16_t h = traits.type == GgmlType::kF16 ? FloatToFp16(f) : FloatToBf16(f);
        std::memcpy(b, &h, 2);
        continue;
      }
      for (size_t off : ScaleOffsets(traits.type)) {
        const fp16_t h = FloatToFp16(uniform(*rng) * 0.05f);
        std::memcpy(b + off, &h, 2);
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

// Activations: mostly normal values, some whole blocks of zeros, an occasional outlier.
std::vector<float> MakeActivations(int64_t n, int64_t cols, std::mt19937* rng) {
  std::vector<float> x(static_cast<size_t>(n * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  for (float& v : x) v = normal(*rng);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k0 = 0; k0 < cols; k0 += 32) {
      const int p = pick(*rng);
      const int64_t k1 = std::min(cols, k0 + 32);
      if (p < 5) std::fill(x.begin() + b * cols + k0, x.begin() + b * cols + k1, 0.0f);
      if (p >= 95) x[static_cast<size_t>(b * cols + k0)] *= 30.0f;
    }
  }
  return x;
}

struct Reference {
  std::vector<double> y;        // (n_batch, rows)
  std::vector<double> act_err;  // sum_k |w_k| max|x_block(k)| / 254 (0 for float weights)
  std::vector<double> abs_dot;  // sum_k |w_k x_k|
  double float_rel = 0;         // 1e-6 * (n_blocks + 8)

  // Allowed |y - y_ref| of output i (see the top of this file).
  double Bound(size_t i) const {
    return act_err[i] * (1 + 1e-6) + float_rel * (abs_dot[i] + act_err[i]) + 1e-30;
  }
};

Reference ComputeReference(const QuantTraits& traits, const QuantMatrix& w, const float* x,
                           int64_t n_batch) {
  const bool quantized_act = !IsFloatType(traits.type);
  const int64_t act_block = traits.block_elems == kQK_K ? kQK_K : 32;
  const int64_t n_blocks = w.cols / traits.block_elems;
  Reference ref;
  ref.y.assign(static_cast<size_t>(n_batch * w.rows), 0.0);
  ref.act_err.assign(ref.y.size(), 0.0);
  ref.abs_dot.assign(ref.y.size(), 0.0);
  ref.float_rel = 1e-6 * static_cast<double>(n_blocks + 8);
  std::vector<float> wf(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    traits.dequantize_ref(w.row(r), wf.data(), w.cols);
    for (int64_t b = 0; b < n_batch; ++b) {
      const float* xb = x + b * w.cols;
      double dot = 0, abs_dot = 0, act_err = 0;
      for (int64_t k0 = 0; k0 < w.cols; k0 += act_block) {
        const int64_t k1 = std::min(w.cols, k0 + act_block);
        double amax = 0, sum_abs_w = 0;
        for (int64_t k = k0; k < k1; ++k) {
          dot += static_cast<double>(wf[k]) * xb[k];
          abs_dot += std::fabs(static_cast<double>(wf[k]) * xb[k]);
          amax = std::max(amax, std::fabs(static_cast<double>(xb[k])));
          sum_abs_w += std::fabs(static_cast<double>(wf[k]));
        }
        if (quantized_act) act_err += sum_abs_w * amax / 254.0;
      }
      const size_t i = static_cast<size_t>(b * w.rows + r);
      ref.y[i] = dot;
      ref.act_err[i] = act_err;
      ref.abs_dot[i] = abs_dot;
    }
  }
  return ref;
}

// Shapes: rows not a multiple of any tile, 1..5 blocks of columns, odd batches, thread counts
// above the number of row shares.
struct Shape {
  int64_t rows;
  int col_blocks;
  int64_t batch;
  int threads;
};
constexpr Shape kShapes[] = {
    {1, 1, 1, 1},   {1, 5, 17, 7}, {7, 2, 3, 2},   {7, 3, 5, 7},   {33, 1, 2, 3},
    {33, 4, 17, 2}, {33, 2, 3, 7}, {130, 5, 1, 2}, {130, 2, 5, 3}, {130, 3, 17, 7},
    {33, 5, 3, 1},  {7, 1, 1, 3},  {130, 1, 2, 1}, {64, 4, 8, 2},
};

class MatMulTypeTest : public testing::TestWithParam<GgmlType> {
 protected:
  const QuantTraits& traits() const { return *FindQuantTraits(GetParam()); }
};

std::string ShapeString(const Shape& s, int64_t cols, CpuIsa isa, bool raw) {
  return testing::PrintToString(s.rows) + "x" + std::to_string(cols) + " batch " +
         std::to_string(s.batch) + " threads " + std::to_string(s.threads) + " isa " +
         std::string(CpuIsaName(isa)) + (raw ? " raw blocks" : " quantized floats");
}

TEST_P(MatMulTypeTest, MatchesFloat64ReferenceWithinActivationQuantizationBound) {
  ASSERT_TRUE(MatMulSupports(GetParam()));
  std::mt19937 rng(1234 + static_cast<int>(GetParam()));
  int checked = 0;
  for (const Shape& s : kShapes) {
    for (bool raw : {false, true}) {
      const int64_t cols = ColsFor(traits(), s.col_blocks);
      const TestMatrix w = MakeWeights(traits(), s.rows, cols, raw, (s.rows % 2) * 6, &rng);
      const std::vector<float> x = MakeActivations(s.batch, cols, &rng);
      const Reference ref = ComputeReference(traits(), w.view, x.data(), s.batch);
      for (CpuIsa isa : AvailableIsas()) {
        const std::vector<float> y = RunMatMul(w.view, x, s.batch, s.threads, isa);
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_LE(std::fabs(y[i] - ref.y[i]), ref.Bound(i))
              << ShapeString(s, cols, isa, raw) << " output (" << i / s.rows << ", " << i % s.rows
              << "): got " << y[i] << " want " << ref.y[i];
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

// Activations that are integers in [-127, 127] with a +-127 in every block quantize exactly
// (d = 1), so only float32 rounding separates the kernels from the reference.
TEST_P(MatMulTypeTest, ExactWhenActivationsAreRepresentable) {
  std::mt19937 rng(99 + static_cast<int>(GetParam()));
  std::uniform_int_distribution<int> code(-127, 127);
  for (const Shape& s : {Shape{33, 3, 5, 2}, Shape{130, 2, 1, 3}}) {
    const int64_t cols = ColsFor(traits(), s.col_blocks);
    for (bool raw : {false, true}) {
      const TestMatrix w = MakeWeights(traits(), s.rows, cols, raw, 0, &rng);
      std::vector<float> x(static_cast<size_t>(s.batch * cols));
      for (size_t k = 0; k < x.size(); ++k) {
        x[k] = static_cast<float>(code(rng));
        if ((k % static_cast<size_t>(cols)) % 32 == 0) x[k] = (k & 1) ? 127.0f : -127.0f;
      }
      const Reference ref = ComputeReference(traits(), w.view, x.data(), s.batch);
      for (CpuIsa isa : AvailableIsas()) {
        const std::vector<float> y = RunMatMul(w.view, x, s.batch, s.threads, isa);
        for (size_t i = 0; i < y.size(); ++i) {
          const double bound = ref.float_rel * ref.abs_dot[i] + 1e-30;  // no activation term
          ASSERT_LE(std::fabs(y[i] - ref.y[i]), bound)
              << ShapeString(s, cols, isa, raw) << " output " << i;
        }
      }
    }
  }
}

// Every SIMD kernel sees the same quantized activations as the scalar one, so the integer
// sums are identical, and all follow the canonical float order of dot_kernels.h: the results
// are the same bits. (The float bound is checked first, so a wrong result says by how much.)
TEST_P(MatMulTypeTest, SimdAgreesWithScalar) {
  std::mt19937 rng(7 + static_cast<int>(GetParam()));
  for (const Shape& s : {Shape{130, 5, 5, 2}, Shape{33, 4, 17, 3}}) {
    const int64_t cols = ColsFor(traits(), s.col_blocks);
    const TestMatrix w = MakeWeights(traits(), s.rows, cols, /*raw=*/true, 0, &rng);
    const std::vector<float> x = MakeActivations(s.batch, cols, &rng);
    const std::vector<float> y_scalar = RunMatMul(w.view, x, s.batch, s.threads, CpuIsa::kScalar);
    const Reference ref = ComputeReference(traits(), w.view, x.data(), s.batch);
    for (CpuIsa isa : AvailableIsas()) {
      if (isa == CpuIsa::kScalar) continue;
      const std::vector<float> y = RunMatMul(w.view, x, s.batch, s.threads, isa);
      for (size_t i = 0; i < y.size(); ++i) {
        // sum_k |w_k x'_k| <= abs_dot + act_err is the scale of both float errors.
        ASSERT_LE(std::fabs(y[i] - y_scalar[i]),
                  2 * ref.float_rel * (ref.abs_dot[i] + ref.act_err[i]) + 1e-30)
            << ShapeString(s, cols, isa, true) << " output " << i;
        ASSERT_EQ(std::memcmp(&y[i], &y_scalar[i], sizeof(float)), 0)
            << ShapeString(s, cols, isa, true) << " output " << i << ": " << y[i] << " vs scalar "
            << y_scalar[i];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTypeTest,
                         testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                                         GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                                         GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K,
                                         GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                         GgmlType::kQ6_K),
                         TypeName);

TEST(MatMulTest, EveryRegisteredTypeIsSupported) {
  int n = 0;
  const QuantTraits* const* all = AllQuantTraits(&n);
  for (int i = 0; i < n; ++i) EXPECT_TRUE(MatMulSupports(all[i]->type)) << all[i]->name;
  EXPECT_FALSE(MatMulSupports(GgmlType::kQ8_K));
}

TEST(MatMulTest, SimdActivationQuantizerIsBitIdenticalToScalar) {
  if (!CpuIsaAvailable(CpuIsa::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(5);
  std::vector<float> x = MakeActivations(1, 1024, &rng);
  x[40] = 1e-40f;  // a denormal
  std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
  const size_t row_bytes = static_cast<size_t>(ActRowBytes(ActFormat::kBlock32, 1024));
  std::vector<uint8_t> a(row_bytes), b(row_bytes);
  QuantizeActRow32Scalar(x.data(), 1024, a.data());
  QuantizeActRow32Avx2(x.data(), 1024, b.data());
  EXPECT_EQ(a, b);
  std::vector<ActBlock256> c(4), d(4);
  QuantizeActBlock256Scalar(x.data(), 1024, c.data());
  QuantizeActBlock256Avx2(x.data(), 1024, d.data());
  EXPECT_EQ(std::memcmp(c.data(), d.data(), c.size() * sizeof(ActBlock256)), 0);
}

TEST(MatMulTest, ActivationBlocksFollowTheirDefinition) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = static_cast<float>(i % 19) - 9.0f;
  x[3] = -254.0f;  // max |x| of the super-block and of block 0
  std::vector<ActBlock256> k(1);
  QuantizeActBlock256Scalar(x.data(), 256, k.data());
  EXPECT_FLOAT_EQ(k[0].d, 2.0f);
  EXPECT_EQ(k[0].qs[3], -127);
  int sum = 0;
  for (int i = 0; i < 16; ++i) sum += k[0].qs[16 + i];
  EXPECT_EQ(k[0].bsums[1], sum);
  std::vector<uint8_t> row(static_cast<size_t>(ActRowBytes(ActFormat::kBlock32, 256)));
  QuantizeActRow32Scalar(x.data(), 256, row.data());
  const ActRow32 r = ViewActRow32(row.data(), 8);
  EXPECT_FLOAT_EQ(r.d[1], 9.0f / 127.0f);
  int s1 = 0;
  for (int i = 0; i < 32; ++i) s1 += r.qs[32 + i];
  EXPECT_EQ(r.qs[32], static_cast<int8_t>(std::nearbyint((x[32] * 127.0f) / 9.0f)));
  EXPECT_FLOAT_EQ(r.ds[1], r.d[1] * static_cast<float>(s1));
}

TEST(MatMulTest, RejectsUnsupportedType) {
  std::vector<uint8_t> data(1024);
  QuantMatrix w{GgmlType::kQ8_K, 2, 256, 292, data.data()};
  std::vector<float> x(256), y(2);
  MatMulScratch scratch;
  const absl::Status st = MatMulQ(w, x.data(), 1, y.data(), nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_NE(st.message().find("Q8_K"), std::string::npos) << st;
}

TEST(MatMulTest, RejectsColsThatAreNotWholeBlocks) {
  std::vector<uint8_t> data(4096);
  QuantMatrix w{GgmlType::kQ4_K, 2, 300, 1024, data.data()};
  std::vector<float> x(300), y(2);
  MatMulScratch scratch;
  const absl::Status st = MatMulQ(w, x.data(), 1, y.data(), nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("300"), std::string::npos) << st;
  EXPECT_NE(st.message().find("256"), std::string::npos) << st;
}

TEST(MatMulTest, RejectsRowStrideSmallerThanARow) {
  std::vector<uint8_t> data(4096);
  QuantMatrix w{GgmlType::kQ4_0, 2, 64, 35, data.data()};  // a Q4_0 row of 64 is 36 bytes
  std::vector<float> x(64), y(2);
  MatMulScratch scratch;
  const absl::Status st = MatMulQ(w, x.data(), 1, y.data(), nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("35"), std::string::npos) << st;
  EXPECT_NE(st.message().find("36"), std::string::npos) << st;
}

TEST(MatMulTest, RejectsAnInstructionSetTheCpuLacks) {
  for (CpuIsa isa : kAllIsas) {
    if (CpuIsaAvailable(isa)) continue;
    std::vector<uint8_t> data(36);
    QuantMatrix w{GgmlType::kQ4_0, 1, 64, 36, data.data()};
    std::vector<float> x(64), y(1);
    MatMulScratch scratch;
    MatMulOptions options;
    options.isa = isa;
    const absl::Status st = MatMulQ(w, x.data(), 1, y.data(), nullptr, &scratch, options);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  }
  EXPECT_TRUE(CpuIsaAvailable(CpuIsa::kScalar));
  EXPECT_TRUE(CpuIsaAvailable(DetectCpuIsa()));
}

TEST(MatMulTest, EmptyProductsWriteNothing) {
  std::vector<uint8_t> data(36);
  std::vector<float> x(64, 1.0f), y(1, 42.0f);
  MatMulScratch scratch;
  QuantMatrix w{GgmlType::kQ4_0, 0, 64, 36, data.data()};
  EXPECT_TRUE(MatMulQ(w, x.data(), 1, y.data(), TestPool(2), &scratch).ok());
  w.rows = 1;
  EXPECT_TRUE(MatMulQ(w, x.data(), 0, y.data(), TestPool(2), &scratch).ok());
  EXPECT_EQ(y[0], 42.0f);
}

}  // namespace
}  // namespace tessera
