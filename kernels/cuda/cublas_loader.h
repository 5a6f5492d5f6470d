// cuBLAS, opened with dlopen the first time a CUDA backend needs it instead of linked into every
// binary. Why: libcublasLt reserves ~94 KiB of static thread-local storage, and glibc carves
// static TLS out of each new thread's stack. Linked in, it left too little of the ~100 KiB stacks
// that civetweb (prometheus-cpp's HTTP server) asks for, so pthread_create failed with EINVAL
// and no process could serve /metrics. Opened with dlopen, its TLS is allocated on first use in
// the threads that actually call cuBLAS, and CPU-only runs never load it at all.
//
// Thread-safe: Cublas() loads once.
#pragma once

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace tessera::cuda {

// The handful of cuBLAS entry points the backend uses (cublas_v2.h names them *_v2).
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  // cublasGemmEx has a C++ overload (cudaDataType compute type); this is the exported one.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*,
                            cudaDataType, int, const void*, void*, cudaDataType, int,
                            cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// The loaded API, or FAILED_PRECONDITION naming the library that could not be opened (for
// example when only the CUDA driver, not the toolkit's libraries, is installed).
absl::StatusOr<const CublasApi*> Cublas();

}  // namespace tessera::cuda
