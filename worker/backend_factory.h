// Picks the Backend a worker (or `tessera generate` / `bench`) runs on from a device string:
//   "cpu"     -> CpuBackend with `threads` threads
//   "cuda:N"  -> CudaBackend on GPU N ("cuda" means cuda:0), when this build has CUDA
// A build without CUDA answers "cuda:N" with FAILED_PRECONDITION ("this build has no CUDA");
// any other string is INVALID_ARGUMENT naming it.
#ifndef TESSERA_WORKER_BACKEND_FACTORY_H_
#define TESSERA_WORKER_BACKEND_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view device, int threads);

// The KV cache type the backend CreateBackend(device, ...) prefers, without creating it (a
// worker sizes its cache before it loads anything): the CPU's f16 on CPUs with AVX-512, else
// f32.
KvType PreferredKvType(absl::string_view device);

// True when this binary was built with the CUDA backend.
bool BuiltWithCuda();

}  // namespace tessera

#endif  // TESSERA_WORKER_BACKEND_FACTORY_H_
