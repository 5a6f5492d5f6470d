// Shared by the GPU tests: skipping cleanly where no GPU is visible, and random GGUF blocks.
#ifndef TESSERA_TESTS_GPU_GPU_TESTUTIL_H_
#define TESSERA_TESTS_GPU_GPU_TESTUTIL_H_

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/quant/types.h"

// Skips the current test (GTEST_SKIP, reported as skipped, not passed) when no CUDA device is
// visible: cudaGetDeviceCount fails (no driver) or returns 0.
#define TESSERA_SKIP_WITHOUT_GPU()                                                          \
  do {                                                                                      \
    if (::tessera::CudaDeviceCount() == 0) {                                                \
      GTEST_SKIP() << "no CUDA device visible (cudaGetDeviceCount failed or returned 0); "  \
                      "GPU tests only run on a machine with an NVIDIA GPU";                 \
    }                                                                                       \
  } while (0)

namespace tessera::testing_util {

// `rows` rows of `cols` Gaussian weights quantized by the format's reference quantizer.
std::vector<uint8_t> RandomBlocks(GgmlType type, int64_t rows, int64_t cols, std::mt19937* rng);
std::vector<float> RandomFloats(int64_t n, std::mt19937* rng, float scale = 1.0f);

// The CUDA backend on device 0 (the test fails if a visible GPU cannot be opened).
std::unique_ptr<CudaBackend> OpenCuda();

// A float32 device buffer with host contents, and back.
std::unique_ptr<DeviceBuffer> ToDevice(Backend* b, const std::vector<float>& host);
std::vector<float> ToHost(Backend* b, DeviceBuffer* d, int64_t n);

}  // namespace tessera::testing_util

#endif  // TESSERA_TESTS_GPU_GPU_TESTUTIL_H_
