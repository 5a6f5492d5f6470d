#include "worker/backend_factory.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tessera {

KvType PreferredKvType(absl::string_view device) {
  return device == "cpu" ? CpuBackend::PreferredKvTypeFor(/*exact_matmul=*/false) : KvType::kF32;
}

bool BuiltWithCuda() {
#if TESSERA_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view device, int threads) {
  if (device == "cpu") {
    if (threads < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("device cpu needs at least 1 thread, got ", threads));
    }
    return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(threads));
  }
  if (device == "cuda" || absl::StartsWith(device, "cuda:")) {
    int index = 0;
    if (device != "cuda" && (!absl::SimpleAtoi(device.substr(5), &index) || index < 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device '", device, "': expected cuda:N with N a GPU index (0, 1, ...)"));
    }
#if TESSERA_HAVE_CUDA
    return CreateCudaBackend(index);
#else
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", device, "': this build has no CUDA (nvcc was not found when it was "
        "configured, or it is a sanitizer build); use --device cpu"));
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "': expected cpu or cuda:N"));
}

}  // namespace tessera
