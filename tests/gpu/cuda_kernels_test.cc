// Each CudaBackend op against an independent reference on fresh random data, several sizes
// including odd ones. Skipped (not passed) without a GPU.
//
// References: matmul and embedding use the formats' reference dequantizers
// (kernels/quant/, themselves checked against the gguf package) with float64 sums; the other
// ops use CpuBackend, the engine's reference backend.
//
// Bounds (per element, relative to S = sum_j |w_rj x_tj|, the scale of the sum):
//   fused matvec (<= 16 tokens, every format): 2e-5 S. Weights are decoded exactly in fp32, so
//     only fp32 accumulation differs from float64 (random-walk error ~ sqrt(cols) * 6e-8 S,
//     about 2e-6 S at 1024 columns).
//   fp16 GEMM path (> 16 tokens): 2e-3 S. Weights and x are rounded to fp16 (relative 2^-11
//     each, so <= 1e-3 per product) before an fp32-accumulated product.
//   embedding: bit-exact (the device applies the reference's operations in its order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#include "tests/gpu/gpu_testutil.h"

namespace tessera {
namespace {

using testing_util::OpenCuda;
using testing_util::RandomBlocks;
using testing_util::RandomFloats;
using testing_util::ToDevice;
using testing_util::ToHost;

const GgmlType kQuantTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                                GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K,
                                GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                GgmlType::kQ6_K, GgmlType::kF16,  GgmlType::kF32,
                                GgmlType::kBF16};

QuantMatrix HostMatrix(GgmlType type, int64_t rows, int64_t cols, const std::vector<uint8_t>& d) {
  QuantMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = *RowBytes(*FindQuantTraits(type), cols);
  m.data = d.data();
  return m;
}

// Checks CUDA MatMul of W (rows x cols) by n_tokens random rows against float64.
void CheckMatMul(CudaBackend* gpu, GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens,
                 double tol, std::mt19937* rng) {
  SCOPED_TRACE(GgmlTypeName(type) + " rows=" + std::to_string(rows) + " cols=" +
               std::to_string(cols) + " tokens=" + std::to_string(n_tokens));
  const std::vector<uint8_t> blocks = RandomBlocks(type, rows, cols, rng);
  const QuantMatrix host = HostMatrix(type, rows, cols, blocks);
  auto w = gpu->LoadWeight(host);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<float> x = RandomFloats(n_tokens * cols, rng);
  auto dx = ToDevice(gpu, x);
  auto dy = gpu->Allocate(n_tokens * rows);
  ASSERT_TRUE(dy.ok());
  ASSERT_TRUE(gpu->MatMul(**w, dx->data(), n_tokens, (*dy)->data()).ok());
  const std::vector<float> y = ToHost(gpu, dy->get(), n_tokens * rows);

  const QuantTraits* t = FindQuantTraits(type);
  std::vector<float> wr(static_cast<size_t>(cols));
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    t->dequantize_ref(host.row(r), wr.data(), cols);
    for (int64_t tok = 0; tok < n_tokens; ++tok) {
      double ref = 0, scale = 0;
      for (int64_t j = 0; j < cols; ++j) {
        ref += static_cast<double>(wr[j]) * x[tok * cols + j];
        scale += std::fabs(static_cast<double>(wr[j]) * x[tok * cols + j]);
      }
      const double err = std::fabs(y[tok * rows + r] - ref) / std::max(scale, 1e-30);
      worst = std::max(worst, err);
      ASSERT_LE(err, tol) << "row " << r << " token " << tok << ": " << y[tok * rows + r]
                          << " vs " << ref;
    }
  }
  ::testing::Test::RecordProperty("worst_" + GgmlTypeName(type), std::to_string(worst));
}

TEST(CudaKernelsTest, FusedMatVecMatchesFloat64ForEveryFormat) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  gpu->set_max_fused_tokens(cuda::kMaxFusedTokens);  // every batch size below on the fused path
  std::mt19937 rng(11);
  for (GgmlType type : kQuantTypes) {
    const int64_t block = FindQuantTraits(type)->block_elems == 256 ? 256 : 32;
    // Widths of part of one 512-weight segment, two and a partial one, and five and a partial
    // one (more segments than the block has warps); rows not a multiple of a block's rows.
    for (int64_t cols : {block, 3 * block, int64_t{1024} + (block == 256 ? 256 : 96)}) {
      for (int64_t rows : {int64_t{1}, int64_t{7}, int64_t{37}}) {
        for (int tokens : {1, 2, 3, 8, 16}) {
          CheckMatMul(gpu.get(), type, rows, cols, tokens, 2e-5, &rng);
          if (HasFatalFailure()) return;
        }
      }
    }
    for (int tokens : {1, 4, 11}) {
      CheckMatMul(gpu.get(), type, 5, 5 * 512 + block, tokens, 2e-5, &rng);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(CudaKernelsTest, LargeBatchFp16GemmMatchesFloat64) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  gpu->set_max_fused_tokens(1);  // from 2 tokens on, the GEMM path
  std::mt19937 rng(12);
  for (GgmlType type : kQuantTypes) {
    const int64_t block = FindQuantTraits(type)->block_elems == 256 ? 256 : 32;
    for (int tokens : {2, 17, 40}) {
      CheckMatMul(gpu.get(), type, 45, 2 * block, tokens, 2e-3, &rng);
      if (HasFatalFailure()) return;
    }
  }
  // Float weights whose width is not a multiple of 16 take the GEMM path at any batch.
  CheckMatMul(gpu.get(), GgmlType::kF32, 9, 40, 1, 2e-3, &rng);
}

TEST(CudaKernelsTest, EmbedIsBitExactWithReferenceDequantizer) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  std::mt19937 rng(13);
  for (GgmlType type : kQuantTypes) {
    SCOPED_TRACE(GgmlTypeName(type));
    const int64_t cols = FindQuantTraits(type)->block_elems == 256 ? 512 : 96;
    const int64_t rows = 23;
    const std::vector<uint8_t> blocks = RandomBlocks(type, rows, cols, &rng);
    const QuantMatrix host = HostMatrix(type, rows, cols, blocks);
    auto w = gpu->LoadWeight(host);
    ASSERT_TRUE(w.ok()) << w.status();
    const std::vector<int32_t> ids = {5, 0, 22, 5, 17};
    auto out = gpu->Allocate(static_cast<int64_t>(ids.size()) * cols);
    ASSERT_TRUE(out.ok());
    ASSERT_TRUE(gpu->Embed(**w, ids.data(), 5, (*out)->data()).ok());
    const std::vector<float> got = ToHost(gpu.get(), out->get(), 5 * cols);
    std::vector<float> want(static_cast<size_t>(cols));
    for (size_t i = 0; i < ids.size(); ++i) {
      FindQuantTraits(type)->dequantize_ref(host.row(ids[i]), want.data(), cols);
      for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(got[i * cols + j], want[j]) << i << "," << j;
    }
    const int32_t bad = static_cast<int32_t>(rows);
    EXPECT_EQ(gpu->Embed(**w, &bad, 1, (*out)->data()).code(), absl::StatusCode::kInvalidArgument);
  }
}

// Max |a - b| relative to max |b|; infinite if any element of `a` is not finite (an element
// never written keeps the NaN the tests poison outputs with).
double RelMaxError(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return err / std::max(scale, 1e-30);
}

TEST(CudaKernelsTest, ElementwiseOpsMatchCpuBackend) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  CpuBackend cpu(1);
  std::mt19937 rng(14);
  for (int64_t dim : {int64_t{16}, int64_t{64}, int64_t{666}, int64_t{4096}}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t n = 5;
    std::vector<float> x = RandomFloats(n * dim, &rng, 3.0f);
    std::vector<float> y = RandomFloats(n * dim, &rng);
    const std::vector<float> gain = RandomFloats(dim, &rng);
    QuantMatrix g;
    g.type = GgmlType::kF32;
    g.rows = 1;
    g.cols = dim;
    g.row_bytes = dim * 4;
    g.data = gain.data();
    auto gw_gpu = gpu->LoadWeight(g);
    auto gw_cpu = cpu.LoadWeight(g);
    ASSERT_TRUE(gw_gpu.ok() && gw_cpu.ok());
    auto dx = ToDevice(gpu.get(), x);
    auto dy = ToDevice(gpu.get(), y);
    auto dout = ToDevice(gpu.get(), std::vector<float>(x.size()));
    std::vector<float> want(x.size());

    // RMSNorm (in place on the GPU, as the model calls it for the final norm).
    ASSERT_TRUE(cpu.RmsNorm(x.data(), **gw_cpu, n, 1e-5f, want.data()).ok());
    ASSERT_TRUE(gpu->RmsNorm(dx->data(), **gw_gpu, n, 1e-5f, dout->data()).ok());
    EXPECT_LE(RelMaxError(ToHost(gpu.get(), dout.get(), n * dim), want), 1e-6);

    ASSERT_TRUE(cpu.SwiGlu(x.data(), y.data(), n * dim, want.data()).ok());
    ASSERT_TRUE(gpu->SwiGlu(dx->data(), dy->data(), n * dim, dout->data()).ok());
    EXPECT_LE(RelMaxError(ToHost(gpu.get(), dout.get(), n * dim), want), 1e-6);

    std::vector<float> sum = x;
    ASSERT_TRUE(cpu.Add(sum.data(), y.data(), n * dim).ok());
    ASSERT_TRUE(gpu->Add(dx->data(), dy->data(), n * dim).ok());
    EXPECT_EQ(ToHost(gpu.get(), dx.get(), n * dim), sum);  // one rounding each: exact

    const std::vector<int32_t> rows = {4, 0, 4};
    std::vector<float> gathered(3 * dim);
    ASSERT_TRUE(cpu.GatherRows(y.data(), rows.data(), 3, dim, gathered.data()).ok());
    ASSERT_TRUE(gpu->GatherRows(dy->data(), rows.data(), 3, dim, dout->data()).ok());
    EXPECT_EQ(ToHost(gpu.get(), dout.get(), 3 * dim), gathered);
  }
}

TEST(CudaKernelsTest, RopePlainAndLlama3MatchCpuBackend) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  CpuBackend cpu(1);
  std::mt19937 rng(15);
  RopeParams plain;
  plain.head_dim = 64;
  plain.rope_dims = 64;
  RopeParams llama3 = plain;
  llama3.head_dim = llama3.rope_dims = 128;
  llama3.freq_base = 500000.0f;
  llama3.scaling_factor = 8.0f;
  RopeParams partial = plain;  // only the leading 32 of 48 dims rotate
  partial.head_dim = 48;
  partial.rope_dims = 32;
  RopeParams factors = plain;
  factors.freq_factors.assign(32, 1.0f);
  for (size_t i = 0; i < 32; ++i) factors.freq_factors[i] = 1.0f + 0.25f * static_cast<float>(i);
  for (const RopeParams& p : {plain, llama3, partial, factors}) {
    SCOPED_TRACE("head_dim " + std::to_string(p.head_dim));
    const int n_heads = 3;
    const std::vector<int32_t> pos = {0, 1, 17, 4000, 131071};
    const int64_t n = static_cast<int64_t>(pos.size());
    std::vector<float> x = RandomFloats(n * n_heads * p.head_dim, &rng);
    auto dx = ToDevice(gpu.get(), x);
    ASSERT_TRUE(cpu.Rope(x.data(), n, n_heads, pos.data(), p).ok());
    ASSERT_TRUE(gpu->Rope(dx->data(), n, n_heads, pos.data(), p).ok());
    // Same double-precision angles; only sin/cos library rounding may differ.
    EXPECT_LE(RelMaxError(ToHost(gpu.get(), dx.get(), static_cast<int64_t>(x.size())), x), 1e-6);
  }
}

// Two sequences with scattered block tables: a prefill step (several tokens each) then a decode
// step; the paged attention of both backends is compared after each.
// Sequences of the given lengths in a paged cache with scattered blocks: a prefill step of all
// their tokens but the last (all sequences in one batch), then one decode step of the last
// tokens, on both backends, for two layers; outputs must agree to fp32 rounding.
void CheckAttention(CudaBackend* gpu, int n_heads, int n_kv_heads, int head_dim,
                    const std::vector<int>& lengths, std::mt19937* rng) {
  SCOPED_TRACE("heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) +
               " head_dim " + std::to_string(head_dim));
  CpuBackend cpu(2);
  constexpr int kBlockTokens = 16;
  KvLayout L;
  L.n_layers = 2;
  L.n_kv_heads = n_kv_heads;
  L.head_dim = head_dim;
  L.block_tokens = kBlockTokens;
  std::vector<std::vector<int32_t>> tables;
  int64_t n_blocks = 0;
  for (int len : lengths) n_blocks += (len + kBlockTokens - 1) / kBlockTokens;
  L.n_blocks = n_blocks + 3;
  ASSERT_TRUE(cpu.AllocateKvCache(L).ok());
  ASSERT_TRUE(gpu->AllocateKvCache(L).ok());
  std::vector<int32_t> ids(static_cast<size_t>(L.n_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), *rng);
  size_t next = 0;
  for (int len : lengths) {
    tables.emplace_back();
    for (int b = 0; b < (len + kBlockTokens - 1) / kBlockTokens; ++b) {
      tables.back().push_back(ids[next++]);
    }
  }
  auto run_step = [&](const std::vector<std::pair<int, int>>& tokens /* seq, pos */) {
    AttentionBatch ab;
    ab.block_table = tables;
    for (auto [seq, pos] : tokens) {
      ab.seq_of_token.push_back(seq);
      ab.position.push_back(pos);
      ab.slot_of_token.push_back(int64_t{tables[seq][pos / kBlockTokens]} * kBlockTokens +
                                 pos % kBlockTokens);
    }
    const int64_t T = static_cast<int64_t>(tokens.size());
    const std::vector<float> q = RandomFloats(T * n_heads * head_dim, rng);
    const std::vector<float> k = RandomFloats(T * n_kv_heads * head_dim, rng);
    const std::vector<float> v = RandomFloats(T * n_kv_heads * head_dim, rng);
    for (int layer = 0; layer < 2; ++layer) {
      std::vector<float> want(q.size());
      ASSERT_TRUE(
          cpu.Attention(layer, q.data(), k.data(), v.data(), n_heads, ab, want.data()).ok());
      auto dq = ToDevice(gpu, q), dk = ToDevice(gpu, k), dv = ToDevice(gpu, v);
      // Poisoned output: every element must be written.
      auto dout = ToDevice(gpu, std::vector<float>(q.size(), std::nanf("")));
      const absl::Status s =
          gpu->Attention(layer, dq->data(), dk->data(), dv->data(), n_heads, ab, dout->data());
      ASSERT_TRUE(s.ok()) << s;
      // Softmax-weighted means of N(0,1) values: fp32 rounding only (different order).
      EXPECT_LE(RelMaxError(ToHost(gpu, dout.get(), static_cast<int64_t>(q.size())), want), 1e-5)
          << "layer " << layer << ", " << T << " tokens";
    }
  };
  std::vector<std::pair<int, int>> prefill, decode;
  for (int seq = 0; seq < static_cast<int>(lengths.size()); ++seq) {
    for (int p = 0; p + 1 < lengths[seq]; ++p) prefill.push_back({seq, p});
    decode.push_back({seq, lengths[seq] - 1});
  }
  run_step(prefill);
  if (::testing::Test::HasFatalFailure()) return;
  run_step(decode);
}

TEST(CudaKernelsTest, PagedAttentionMatchesCpuBackend) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  std::mt19937 rng(16);
  // head_dim 16 and 40 take the one-pass kernel, multiples of 32 the split-context kernels;
  // contexts from 1 to 2100 positions (several chunks and tiles, partial last tiles); query
  // groups of 1, 3 (SmolLM2), 4 (Llama 3 8B), 5 and 16 (405B: four blocks per KV head).
  CheckAttention(gpu.get(), 6, 2, 16, {7, 150}, &rng);
  CheckAttention(gpu.get(), 6, 2, 40, {7, 150}, &rng);
  CheckAttention(gpu.get(), 6, 2, 64, {1, 7, 150}, &rng);
  CheckAttention(gpu.get(), 9, 3, 64, {300, 2}, &rng);
  CheckAttention(gpu.get(), 8, 2, 128, {129, 2100, 64}, &rng);
  CheckAttention(gpu.get(), 5, 1, 96, {257}, &rng);
  CheckAttention(gpu.get(), 16, 1, 128, {700}, &rng);
  CheckAttention(gpu.get(), 4, 4, 256, {33, 1000}, &rng);
  CheckAttention(gpu.get(), 2, 2, 32, {128}, &rng);
}

TEST(CudaKernelsTest, VramAccountingCountsWeightsKvAndWorkspace) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto gpu = OpenCuda();
  ASSERT_NE(gpu, nullptr);
  std::mt19937 rng(17);
  const std::vector<uint8_t> blocks = RandomBlocks(GgmlType::kQ4_0, 64, 256, &rng);
  const QuantMatrix host = HostMatrix(GgmlType::kQ4_0, 64, 256, blocks);
  auto w1 = gpu->LoadWeight(host);
  auto w2 = gpu->LoadWeight(host);  // same host tensor (a tied embedding): one upload
  ASSERT_TRUE(w1.ok() && w2.ok());
  KvLayout L;
  L.n_layers = 1;
  L.n_kv_heads = 1;
  L.head_dim = 64;
  L.n_blocks = 8;
  ASSERT_TRUE(gpu->AllocateKvCache(L).ok());
  auto buf = gpu->Allocate(1000);
  ASSERT_TRUE(buf.ok());
  auto u = gpu->Vram();
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->weights_bytes, 64 * 8 * 18);
  EXPECT_EQ(u->kv_cache_bytes, L.bytes());
  EXPECT_GE(u->workspace_bytes, 4000);
  EXPECT_GT(u->total_bytes, u->free_bytes);
  buf->reset();
  w1->reset();
  w2->reset();
  u = gpu->Vram();
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->weights_bytes, 0);
  auto budget = gpu->KvBudgetFromFreeVram(0.5);
  ASSERT_TRUE(budget.ok());
  EXPECT_GT(*budget, 0);
  EXPECT_FALSE(gpu->KvBudgetFromFreeVram(1.5).ok());
}

}  // namespace
}  // namespace tessera
