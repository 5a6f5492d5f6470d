// The CUDA backend's host-side launch planning, which runs without a GPU: how attention splits
// contexts into chunks (kernels/cuda/launch.h PlanAttention) and which shapes the fused matvec
// takes. Skipped in builds without CUDA (the sanitizer build, machines without nvcc).
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <tuple>

#include "gtest/gtest.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/launch.h"
#endif
#include "kernels/quant/types.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA

TEST(CudaPlanTest, AttentionChunksCoverEveryContextWithoutEmptyChunks) {
  for (int64_t n_tokens : {1, 3, 8, 64, 512}) {
    for (int max_ctx : {1, 127, 128, 129, 512, 2100, 8192, 131072}) {
      for (auto [heads, kv, hd] : std::initializer_list<std::tuple<int, int, int>>{
               {32, 8, 128}, {9, 3, 64}, {128, 8, 128}, {16, 16, 256}, {8, 1, 96}}) {
        SCOPED_TRACE(::testing::Message() << n_tokens << " tokens, context " << max_ctx << ", "
                                          << heads << "/" << kv << " heads of " << hd);
        const cuda::AttentionPlan p = cuda::PlanAttention(n_tokens, heads, kv, hd, max_ctx, 132);
        ASSERT_GT(p.chunk_len, 0);
        EXPECT_EQ(p.chunk_len % 128, 0) << "chunks are whole tiles";
        EXPECT_GE(int64_t{p.n_chunks} * p.chunk_len, max_ctx);
        EXPECT_LT(int64_t{p.n_chunks - 1} * p.chunk_len, max_ctx) << "the last chunk is used";
        EXPECT_EQ(p.workspace_floats, n_tokens * heads * p.n_chunks * (int64_t{hd} + 2));
        // Enough blocks for the device: at least half the 4 per multiprocessor aimed at (whole
        // tiles per chunk round the count down by up to half), unless every tile is a chunk.
        const int64_t groups = (heads / kv + 3) / 4;
        const int64_t blocks = n_tokens * kv * groups * p.n_chunks;
        const int64_t tiles = (max_ctx + 127) / 128;
        EXPECT_LE(p.n_chunks, tiles);
        EXPECT_TRUE(2 * blocks >= 4 * 132 || p.n_chunks == tiles) << blocks << " blocks";
      }
    }
  }
}

TEST(CudaPlanTest, DecodeOfOneSequenceIsSplitPrefillIsNot) {
  // Llama 3 8B heads on a 132-multiprocessor H200.
  const cuda::AttentionPlan decode = cuda::PlanAttention(1, 32, 8, 128, 8192, 132);
  EXPECT_EQ(decode.n_chunks, 64);
  EXPECT_EQ(decode.chunk_len, 128);
  const cuda::AttentionPlan prefill = cuda::PlanAttention(512, 32, 8, 128, 512, 132);
  EXPECT_EQ(prefill.n_chunks, 1);
  EXPECT_EQ(prefill.chunk_len, 512);
}

TEST(CudaPlanTest, HeadDimsOutsideTheSplitKernelsTakeTheOnePassKernel) {
  for (int hd : {16, 40, 100, 288}) {
    const cuda::AttentionPlan p = cuda::PlanAttention(4, 8, 2, hd, 300, 132);
    EXPECT_EQ(p.workspace_floats, 0) << hd;
    EXPECT_EQ(p.chunk_len, 0) << hd;
  }
  EXPECT_EQ(cuda::PlanAttention(0, 8, 2, 64, 300, 132).workspace_floats, 0);
  EXPECT_EQ(cuda::PlanAttention(4, 8, 2, 64, 0, 132).workspace_floats, 0);
}

TEST(CudaPlanTest, FusedMatVecTakesWholeBlocksOfSixteenWeights) {
  const auto supports = [](GgmlType t, int64_t cols) {
    return cuda::FusedMatVecSupports(static_cast<uint32_t>(t), cols);
  };
  EXPECT_TRUE(supports(GgmlType::kQ4_0, 32));
  EXPECT_TRUE(supports(GgmlType::kQ4_0, 576));
  EXPECT_FALSE(supports(GgmlType::kQ4_0, 48));  // 1.5 blocks
  EXPECT_TRUE(supports(GgmlType::kQ4_K, 256));
  EXPECT_FALSE(supports(GgmlType::kQ4_K, 288));
  EXPECT_TRUE(supports(GgmlType::kF32, 16));
  EXPECT_FALSE(supports(GgmlType::kF32, 40));  // the GEMM path takes it
  EXPECT_FALSE(supports(GgmlType::kQ4_0, 0));
  EXPECT_FALSE(cuda::FusedMatVecSupports(9999, 256));
}

#else

TEST(CudaPlanTest, NeedsACudaBuild) { GTEST_SKIP() << "built without CUDA (no nvcc)"; }

#endif  // TESSERA_HAVE_CUDA

}  // namespace
}  // namespace tessera
