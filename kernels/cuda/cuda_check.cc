#include "kernels/cuda/cuda_check.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cublas_loader.h"

namespace tessera {

absl::Status CudaError(cudaError_t error, const char* call, const char* file, int line) {
  const std::string message = absl::StrCat(file, ":", line, ": ", call, " failed: ",
                                           cudaGetErrorName(error), " (",
                                           cudaGetErrorString(error), ")");
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
      return absl::FailedPreconditionError(message);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CublasError(cublasStatus_t status, const char* call, const char* file, int line) {
  // Only reached after a call through the loaded API, so Cublas() is loaded here.
  const cuda::CublasApi* api = *cuda::Cublas();
  const std::string message =
      absl::StrCat(file, ":", line, ": ", call, " failed: ", api->status_name(status), " (",
                   api->status_string(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  if (status == CUBLAS_STATUS_NOT_INITIALIZED) return absl::FailedPreconditionError(message);
  if (status == CUBLAS_STATUS_INVALID_VALUE) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

}  // namespace tessera
