// Batch invariance of MatMulQ (kernels/cpu/dot_kernels.h, "Summation order"): the output of one
// (weight row, activation row) pair is the same bits whatever else is in the call. For every
// weight type and instruction set, odd block counts (1, 7, 9, 18, 67: on both sides of the
// eight summation chains), batches of 1..20, 24 and 33 rows (every row-dot group size, the tiled
// paths' thresholds and partial 16-row panels), each activation row at changing positions, with
// the tiled path on (default thresholds, and from batch 1) and off, on 1, 2 and 3 threads: every
// output row must equal the same activation row computed alone (batch 1, one thread).
//
// Also: the instruction sets agree with the scalar kernels bit for bit (the canonical order
// leaves them nothing to round differently). Accuracy against the float64 reference is
// matmul_test.cc's and gemm_test.cc's business.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/matmul_testutil.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

constexpr int64_t kNoGemm = std::numeric_limits<int64_t>::max();
constexpr int64_t kRows = 37;  // three 16-row thread chunks, not a multiple of any tile
constexpr int64_t kMaxBatch = 33;

// Columns for a block count: blocks of the type, or for the float formats that many groups of
// 8 elements plus 3 (so the 16-lane loop, the 8-step and the scalar tail all run).
int64_t ColsFor(const QuantTraits& traits, int64_t n_blocks) {
  if (IsFloatType(traits.type)) return 8 * n_blocks + 3;
  return n_blocks * traits.block_elems;
}

// Weights through the reference quantizer, rows of different magnitude.
std::vector<uint8_t> MakeWeights(const QuantTraits& traits, int64_t cols, std::mt19937* rng) {
  const int64_t row_bytes = *RowBytes(traits, cols);
  std::vector<uint8_t> bytes(static_cast<size_t>(kRows * row_bytes));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < kRows; ++r) {
    const float scale = std::exp2(static_cast<float>(r % 5) - 2.0f);
    for (float& v : row) v = normal(*rng) * scale;
    traits.quantize_ref(row.data(), bytes.data() + r * row_bytes, cols);
  }
  return bytes;
}

// Normal values with some all-zero 32-element blocks and outliers: the zero blocks give
// terms of exactly 0 and the outliers large cancellations, where a different order shows.
std::vector<float> MakeActivations(int64_t n, int64_t cols, std::mt19937* rng) {
  std::vector<float> x(static_cast<size_t>(n * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  for (float& v : x) v = normal(*rng);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k0 = 0; k0 < cols; k0 += 32) {
      const int p = pick(*rng);
      float* blk = x.data() + b * cols + k0;
      const int64_t len = std::min<int64_t>(32, cols - k0);
      if (p < 8) std::fill(blk, blk + len, 0.0f);
      if (p >= 92) blk[0] *= 40.0f;
    }
  }
  return x;
}

// gemm_min_batch: where both tiled paths start; kDefaults leaves MatMulOptions' defaults (the
// k-quants' then depends on the instruction set).
constexpr int64_t kDefaults = 0;

std::vector<float> RunMatMul(const QuantMatrix& w, const float* x, int64_t n_batch, int n_threads,
                             CpuIsa isa, int64_t gemm_min_batch) {
  std::vector<float> y(static_cast<size_t>(n_batch * w.rows), std::nanf(""));
  MatMulScratch scratch;
  MatMulOptions options;
  options.isa = isa;
  if (gemm_min_batch != kDefaults) {
    options.gemm_min_batch = options.kquant_gemm_min_batch = gemm_min_batch;
  }
  const absl::Status st = MatMulQ(w, x, n_batch, y.data(), TestPool(n_threads), &scratch, options);
  EXPECT_TRUE(st.ok()) << st;
  return y;
}

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

class BatchInvarianceTest : public testing::TestWithParam<GgmlType> {
 protected:
  const QuantTraits& traits() const { return *FindQuantTraits(GetParam()); }
};

constexpr int64_t kBlockCounts[] = {1, 7, 9, 18, 67};

TEST_P(BatchInvarianceTest, EveryRowEqualsTheRowAloneForAnyBatchPathAndThreads) {
  std::mt19937 rng(2024 + static_cast<int>(GetParam()));
  for (int64_t n_blocks : kBlockCounts) {
    const int64_t cols = ColsFor(traits(), n_blocks);
    std::vector<uint8_t> bytes = MakeWeights(traits(), cols, &rng);
    const QuantMatrix w{GetParam(), kRows, cols, *RowBytes(traits(), cols), bytes.data()};
    const std::vector<float> pool_x = MakeActivations(kMaxBatch, cols, &rng);
    for (CpuIsa isa : AvailableIsas()) {
      std::vector<std::vector<float>> alone;
      for (int64_t b = 0; b < kMaxBatch; ++b) {
        alone.push_back(RunMatMul(w, pool_x.data() + b * cols, 1, 1, isa, kDefaultGemmMinBatch));
      }
      std::vector<int64_t> batches;
      for (int64_t n = 1; n <= 20; ++n) batches.push_back(n);
      batches.push_back(24);  // the k-quants' default switch on AVX2 (16 on AVX-512 VNNI)
      batches.push_back(kMaxBatch);
      for (int64_t n : batches) {
        // Rows start + 0 .. start + n - 1 (mod 33): each row lands at a different position in
        // each batch size.
        const int64_t start = (7 * n) % kMaxBatch;
        std::vector<float> x(static_cast<size_t>(n * cols));
        std::vector<int64_t> which(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) {
          which[j] = (start + j) % kMaxBatch;
          std::memcpy(x.data() + j * cols, pool_x.data() + which[j] * cols, cols * sizeof(float));
        }
        for (int64_t gemm_min_batch : {kDefaults, int64_t{1}, kNoGemm}) {
          for (int threads : {1, 2, 3}) {
            const std::vector<float> y = RunMatMul(w, x.data(), n, threads, isa, gemm_min_batch);
            for (int64_t j = 0; j < n; ++j) {
              ASSERT_TRUE(SameBits(y.data() + j * kRows, alone[which[j]].data(), kRows))
                  << GgmlTypeName(GetParam()) << " " << CpuIsaName(isa) << " cols " << cols
                  << " batch " << n << " position " << j << " (row " << which[j]
                  << ") gemm_min_batch " << gemm_min_batch << " threads " << threads;
            }
          }
        }
      }
    }
  }
}

TEST_P(BatchInvarianceTest, InstructionSetsAgreeWithTheScalarKernelsBitForBit) {
  std::mt19937 rng(99 + static_cast<int>(GetParam()));
  for (int64_t n_blocks : kBlockCounts) {
    const int64_t cols = ColsFor(traits(), n_blocks);
    std::vector<uint8_t> bytes = MakeWeights(traits(), cols, &rng);
    const QuantMatrix w{GetParam(), kRows, cols, *RowBytes(traits(), cols), bytes.data()};
    for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{17}}) {
      const std::vector<float> x = MakeActivations(n, cols, &rng);
      const std::vector<float> scalar = RunMatMul(w, x.data(), n, 1, CpuIsa::kScalar, kNoGemm);
      for (CpuIsa isa : AvailableIsas()) {
        const std::vector<float> y = RunMatMul(w, x.data(), n, 2, isa, kDefaultGemmMinBatch);
        for (int64_t i = 0; i < n * kRows; ++i) {
          ASSERT_TRUE(SameBits(&y[i], &scalar[i], 1))
              << GgmlTypeName(GetParam()) << " " << CpuIsaName(isa) << " cols " << cols
              << " batch " << n << " output (" << i / kRows << ", " << i % kRows << "): " << y[i]
              << " vs scalar " << scalar[i];
        }
      }
    }
  }
}

// MatMulQMany (the Q/K/V and gate/up products of one input, one pass of the pool): each product
// is the same bits as MatMulQ on it alone, with formats of both activation layouts, a float
// one, and the tiled and row-dot paths in one call.
TEST(MatMulQManyTest, EachProductEqualsMatMulQAlone) {
  std::mt19937 rng(7);
  const int64_t cols = 512;  // whole blocks of every format
  const GgmlType types[] = {GgmlType::kQ4_K, GgmlType::kQ6_K, GgmlType::kQ4_0, GgmlType::kF32,
                            GgmlType::kQ8_0};
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<QuantMatrix> ws;
  for (GgmlType t : types) {
    const QuantTraits& traits = *FindQuantTraits(t);
    bytes.push_back(MakeWeights(traits, cols, &rng));
    ws.push_back({t, kRows, cols, *RowBytes(traits, cols), bytes.back().data()});
  }
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{16}, kMaxBatch}) {
    const std::vector<float> x = MakeActivations(n, cols, &rng);
    for (CpuIsa isa : AvailableIsas()) {
      for (int threads : {1, 2, 3}) {
        std::vector<std::vector<float>> ys;
        std::vector<MatMulProduct> products;
        for (const QuantMatrix& w : ws) {
          ys.emplace_back(static_cast<size_t>(n * kRows), std::nanf(""));
          products.push_back({&w, ys.back().data()});
        }
        MatMulScratch scratch;
        MatMulOptions options;
        options.isa = isa;
        const absl::Status st = MatMulQMany(products.data(), static_cast<int>(products.size()),
                                            x.data(), n, TestPool(threads), &scratch, options);
        ASSERT_TRUE(st.ok()) << st;
        for (size_t i = 0; i < ws.size(); ++i) {
          const std::vector<float> alone =
              RunMatMul(ws[i], x.data(), n, 1, isa, kDefaultGemmMinBatch);
          ASSERT_TRUE(SameBits(ys[i].data(), alone.data(), n * kRows))
              << GgmlTypeName(types[i]) << " " << CpuIsaName(isa) << " batch " << n
              << " threads " << threads;
        }
      }
    }
  }
}

TEST(MatMulQManyTest, RejectsProductsOfDifferentWidthsAndTooMany) {
  std::vector<uint8_t> data(4096);
  const QuantMatrix a{GgmlType::kQ4_0, 2, 64, 36, data.data()};
  const QuantMatrix b{GgmlType::kQ4_0, 2, 96, 54, data.data()};
  std::vector<float> x(96), y(4);
  MatMulScratch scratch;
  const MatMulProduct two[] = {{&a, y.data()}, {&b, y.data()}};
  absl::Status st = MatMulQMany(two, 2, x.data(), 1, nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("product 1"), std::string::npos) << st;
  EXPECT_NE(st.message().find("96"), std::string::npos) << st;
  std::vector<MatMulProduct> many(kMaxMatMulProducts + 1, MatMulProduct{&a, y.data()});
  st = MatMulQMany(many.data(), static_cast<int>(many.size()), x.data(), 1, nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, BatchInvarianceTest,
                         testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                                         GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                                         GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K,
                                         GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                         GgmlType::kQ6_K),
                         TypeName);

}  // namespace
}  // namespace tessera
