// Turning CUDA / cuBLAS failures into absl::Status. Every runtime call and every kernel launch
// of the CUDA backend goes through TESSERA_CUDA_RETURN_IF_ERROR, so a failure names the call,
// the file and line, and CUDA's own error name and text, e.g.
//   "kernels/cuda/cuda_backend.cc:120: cudaMalloc(&p, bytes) failed: cudaErrorMemoryAllocation
//    (out of memory)".
// Host-compiled code only (it includes absl); the .cu launchers return raw cudaError_t.
#ifndef TESSERA_KERNELS_CUDA_CUDA_CHECK_H_
#define TESSERA_KERNELS_CUDA_CUDA_CHECK_H_

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace tessera {

// Maps out-of-memory to RESOURCE_EXHAUSTED, a missing device or driver to FAILED_PRECONDITION,
// bad arguments to INVALID_ARGUMENT and everything else to INTERNAL.
absl::Status CudaError(cudaError_t error, const char* call, const char* file, int line);
absl::Status CublasError(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace tessera

#define TESSERA_CUDA_RETURN_IF_ERROR(call)                                     \
  do {                                                                         \
    const cudaError_t tessera_cuda_error_ = (call);                            \
    if (tessera_cuda_error_ != cudaSuccess) {                                  \
      return ::tessera::CudaError(tessera_cuda_error_, #call, __FILE__, __LINE__); \
    }                                                                          \
  } while (0)

#define TESSERA_CUBLAS_RETURN_IF_ERROR(call)                                       \
  do {                                                                             \
    const cublasStatus_t tessera_cublas_status_ = (call);                          \
    if (tessera_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                         \
      return ::tessera::CublasError(tessera_cublas_status_, #call, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

#endif  // TESSERA_KERNELS_CUDA_CUDA_CHECK_H_
