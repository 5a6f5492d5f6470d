// libFuzzer target for the GGUF reader and the llama config on top of it: any input must either
// parse or fail with an error, never crash, read out of bounds or allocate without bound.
//
// Build (clang only), e.g.:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/gguf_fuzz.cc \
//     model/gguf.cc model/gguf_value.cc model/config.cc kernels/quant/*.cc \
//     -labsl_status -labsl_statusor -labsl_strings -labsl_str_format_internal -o gguf_fuzz
//   ./gguf_fuzz -max_len=65536 corpus/
// A seed corpus: any small .gguf (tests/python/test_gguf_reader.py writes several).
#include <cstddef>
#include <cstdint>

#include "model/config.h"
#include "model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<tessera::GgufFile>> f =
      tessera::GgufFile::FromBuffer("fuzz.gguf", data, size);
  if (!f.ok()) return 0;
  // Exercise the accessors on whatever parsed.
  for (const tessera::GgufKeyValue& kv : (*f)->metadata()) {
    (void)kv.value.ToString(16);
    (void)(*f)->GetU64(kv.key);
    (void)(*f)->GetStringArray(kv.key);
    (void)(*f)->GetIntArray(kv.key);
  }
  for (const tessera::GgufTensorInfo& t : (*f)->tensors()) {
    (void)(*f)->RowRange(t, 0, t.n_rows());
    (void)(*f)->SubMatrix(t, 0, 1, 0, t.traits->block_elems);
  }
  (void)tessera::LoadModelConfig(**f);
  return 0;
}
