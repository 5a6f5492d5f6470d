// NcclCommunicator (worker/nccl_communicator.h): one rank on one GPU goes through the same code
// path as many; two ranks run where two GPUs are visible. Skipped (not passed) otherwise, and
// compiled only in builds with NCCL.
#if TESSERA_HAVE_NCCL
#include "worker/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/gpu/gpu_testutil.h"

namespace tessera {
namespace {

// Host <-> device helpers on the current device.
float* DeviceCopy(const std::vector<float>& h) {
  void* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<float*>(d);
}
std::vector<float> HostCopy(const float* d, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(NcclCommunicatorTest, SingleRankCollectivesAreIdentity) {
  TESSERA_SKIP_WITHOUT_GPU();
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto c = NcclCommunicator::Create(*id, 0, 1, 0, absl::Seconds(30));
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> v = {1.5f, -2.0f, 3.25f};
  float* d = DeviceCopy(v);
  float* out = DeviceCopy(std::vector<float>(3));
  ASSERT_TRUE((*c)->AllReduceSum(d, 3).ok());
  EXPECT_EQ(HostCopy(d, 3), v);
  ASSERT_TRUE((*c)->AllGather(d, 3, out).ok());
  EXPECT_EQ(HostCopy(out, 3), v);
  ASSERT_TRUE((*c)->AllGatherV(d, {3}, out).ok());
  EXPECT_EQ(HostCopy(out, 3), v);
  ASSERT_TRUE((*c)->Barrier().ok());
  EXPECT_EQ((*c)->Send(0, d, 3).code(), absl::StatusCode::kInvalidArgument);  // no self-send
  cudaFree(d);
  cudaFree(out);
  EXPECT_FALSE(NcclCommunicator::Create("short", 0, 1, 0, absl::Seconds(1)).ok());
}

TEST(NcclCommunicatorTest, TwoRanksOnTwoGpus) {
  TESSERA_SKIP_WITHOUT_GPU();
  if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs two visible GPUs";
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<std::vector<float>> reduced(2), gathered(2), received(2);
  std::vector<absl::Status> status(2);
  auto rank_main = [&](int rank) {
    cudaSetDevice(rank);
    auto c = NcclCommunicator::Create(*id, rank, 2, rank, absl::Seconds(60));
    if (!c.ok()) {
      status[rank] = c.status();
      return;
    }
    float* d = DeviceCopy({1.0f + rank, 10.0f * rank});
    float* out = DeviceCopy(std::vector<float>(5));
    absl::Status s = (*c)->AllReduceSum(d, 2);
    reduced[rank] = HostCopy(d, 2);
    // Rank 0 contributes 2 floats, rank 1 three.
    float* local = DeviceCopy(rank == 0 ? std::vector<float>{7, 8} : std::vector<float>{1, 2, 3});
    if (s.ok()) s = (*c)->AllGatherV(local, {2, 3}, out);
    gathered[rank] = HostCopy(out, 5);
    if (s.ok()) s = rank == 0 ? (*c)->Send(1, local, 2) : (*c)->Recv(0, out, 2);
    received[rank] = HostCopy(out, 2);
    if (s.ok()) s = (*c)->Barrier();
    status[rank] = s;
    cudaFree(d);
    cudaFree(out);
    cudaFree(local);
  };
  std::thread r0(rank_main, 0), r1(rank_main, 1);
  r0.join();
  r1.join();
  ASSERT_TRUE(status[0].ok()) << status[0];
  ASSERT_TRUE(status[1].ok()) << status[1];
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(reduced[r], (std::vector<float>{3.0f, 10.0f}));
    EXPECT_EQ(gathered[r], (std::vector<float>{7, 8, 1, 2, 3}));
  }
  EXPECT_EQ(received[1], (std::vector<float>{7, 8}));
}

}  // namespace
}  // namespace tessera
#endif  // TESSERA_HAVE_NCCL
