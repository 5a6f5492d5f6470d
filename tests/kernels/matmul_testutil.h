// Helpers shared by the matmul kernel tests (matmul_test.cc, gemm_test.cc,
// batch_invariance_test.cc).
#ifndef TESSERA_TESTS_KERNELS_MATMUL_TESTUTIL_H_
#define TESSERA_TESTS_KERNELS_MATMUL_TESTUTIL_H_

#include <cstddef>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant/types.h"

namespace tessera {

// Every instruction set, scalar first.
inline constexpr CpuIsa kAllIsas[] = {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512,
                                      CpuIsa::kAvx512Vnni, CpuIsa::kAmx};

// The instruction sets this CPU has, scalar first; with simd_only, without scalar.
std::vector<CpuIsa> AvailableIsas(bool simd_only = false);

// A pool of n_threads (1..15), created once per process and kept.
ThreadPool* TestPool(int n_threads);

bool IsFloatType(GgmlType t);

// Byte offsets of the fp16 scales (d, and m or dmin) inside one block of t; empty for the
// float formats.
std::vector<size_t> ScaleOffsets(GgmlType t);

// MatMulQ of w on x (n_batch rows) on `isa` with n_threads pool threads and the tiled paths
// of the 32-element formats from gemm_min_batch rows; y starts as NaNs, a failure is a test
// failure.
std::vector<float> RunMatMul(const QuantMatrix& w, const std::vector<float>& x, int64_t n_batch,
                             int n_threads, CpuIsa isa,
                             int64_t gemm_min_batch = kDefaultGemmMinBatch);

// Test parameter names: the type's GGUF name.
std::string TypeName(const testing::TestParamInfo<GgmlType>& info);

}  // namespace tessera

#endif  // TESSERA_TESTS_KERNELS_MATMUL_TESTUTIL_H_
