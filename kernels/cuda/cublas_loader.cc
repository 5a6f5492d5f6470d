#include "kernels/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace tessera::cuda {
namespace {

template <typename Fn>
absl::Status Resolve(void* lib, const char* symbol, const std::string& library, Fn* out) {
  void* p = dlsym(lib, symbol);
  if (p == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(library, " has no symbol ", symbol, " (a cuBLAS older than the headers "
                     "Tessera was built with?)"));
  }
  *out = reinterpret_cast<Fn>(p);
  return absl::OkStatus();
}

absl::StatusOr<CublasApi> Load() {
  // The major version of the headers we compiled against names the library's SONAME.
  const std::string library = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load ", library, " for the CUDA backend's prefill GEMM: ",
                     why != nullptr ? why : "unknown error",
                     " (install the CUDA toolkit's cuBLAS or add it to LD_LIBRARY_PATH)"));
  }
  // Never dlclose'd: handles and kernels from it live until the process exits.
  CublasApi api;
  absl::Status s = Resolve(lib, "cublasCreate_v2", library, &api.create);
  if (s.ok()) s = Resolve(lib, "cublasDestroy_v2", library, &api.destroy);
  if (s.ok()) s = Resolve(lib, "cublasSetStream_v2", library, &api.set_stream);
  if (s.ok()) s = Resolve(lib, "cublasGemmEx", library, &api.gemm_ex);
  if (s.ok()) s = Resolve(lib, "cublasGetStatusName", library, &api.status_name);
  if (s.ok()) s = Resolve(lib, "cublasGetStatusString", library, &api.status_string);
  if (!s.ok()) return s;
  return api;
}

}  // namespace

absl::StatusOr<const CublasApi*> Cublas() {
  static const absl::StatusOr<CublasApi>* const loaded = new absl::StatusOr<CublasApi>(Load());
  if (!loaded->ok()) return loaded->status();
  return &**loaded;
}

}  // namespace tessera::cuda
