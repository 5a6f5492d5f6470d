// CreateBackend's device strings (worker/backend_factory.h). The CPU and error cases need no
// GPU; "cuda:0" is checked only where a GPU is visible.
#include "worker/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_testutil.h"

namespace tessera {
namespace {

TEST(BackendFactoryTest, CpuAndBadStrings) {
  auto cpu = CreateBackend("cpu", 2);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_NE((*cpu)->name().find("cpu"), std::string::npos);
  EXPECT_EQ(CreateBackend("cpu", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateBackend("tpu", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateBackend("cuda:x", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateBackend("cuda:-1", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BuiltWithCuda());  // this test binary only exists in CUDA builds
}

TEST(BackendFactoryTest, CudaDeviceOpensOrSaysWhyNot) {
  if (CudaDeviceCount() == 0) {
    // Without a GPU the error must say so, not crash.
    auto b = CreateBackend("cuda:0", 1);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
    GTEST_SKIP() << "no CUDA device visible; only the error path was checked";
  }
  auto b = CreateBackend("cuda:0", 1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*b)->name().find("cuda:0"), std::string::npos);
  EXPECT_EQ(CreateBackend(absl::StrCat("cuda:", CudaDeviceCount()), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
