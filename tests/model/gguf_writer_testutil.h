// A test-only GGUF writer: builds well-formed GGUF images in memory with any metadata and
// tensors, and lets a test corrupt chosen fields (counts, lengths, offsets, types) to make
// hostile files. It is written from the format description in model/gguf.h, independently of
// the reader's code; the Python test cross-checks both against the gguf package's writer.
#ifndef TESSERA_TESTS_MODEL_GGUF_WRITER_TESTUTIL_H_
#define TESSERA_TESTS_MODEL_GGUF_WRITER_TESTUTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera::test {

// Raw GGUF metadata type ids (written as numbers so tests can also write unknown ones).
enum : uint32_t {
  kTU8 = 0,
  kTI8 = 1,
  kTU16 = 2,
  kTI16 = 3,
  kTU32 = 4,
  kTI32 = 5,
  kTF32 = 6,
  kTBool = 7,
  kTString = 8,
  kTArray = 9,
  kTU64 = 10,
  kTI64 = 11,
  kTF64 = 12,
};

// A metadata value as a tree mirroring its encoding.
struct TestValue {
  uint32_t type = kTU8;
  std::string bytes;                        // scalar: little-endian bytes; STRING: contents
  uint32_t element_type = kTU8;             // ARRAY only
  std::vector<TestValue> elements;          // ARRAY only; each encoded without its type word
  std::optional<uint64_t> length_override;  // STRING length / ARRAY count written instead

  static TestValue U8(uint8_t v);
  static TestValue I8(int8_t v);
  static TestValue U16(uint16_t v);
  static TestValue I16(int16_t v);
  static TestValue U32(uint32_t v);
  static TestValue I32(int32_t v);
  static TestValue U64(uint64_t v);
  static TestValue I64(int64_t v);
  static TestValue F32(float v);
  static TestValue F64(double v);
  static TestValue Bool(bool v);
  static TestValue Str(std::string v);
  static TestValue Array(uint32_t element_type, std::vector<TestValue> elements);
  // A scalar with arbitrary raw bytes (e.g. a BOOL of 7, or an unknown type id).
  static TestValue Raw(uint32_t type, std::string bytes);
};

struct TestTensor {
  std::string name;
  uint32_t type = 0;         // ggml type id
  std::vector<uint64_t> ne;  // ne[0] innermost
  std::string data;          // empty: zero bytes of the natural size for type and shape
  std::optional<uint32_t> n_dims_override;
  std::optional<uint64_t> offset_override;  // relative to the data section
};

// Where each field landed in the last Build(), for patching.
struct GgufLayout {
  size_t version_at = 4;
  size_t tensor_count_at = 8;
  size_t kv_count_at = 16;
  std::vector<size_t> kv_at;             // each key/value pair (its key length field)
  std::vector<size_t> tensor_info_at;    // each tensor info (its name length field)
  std::vector<size_t> tensor_offset_at;  // each tensor info's offset field
  size_t data_at = 0;                    // start of the data section
  std::vector<size_t> tensor_data_at;    // absolute offset of each tensor's bytes
};

class GgufWriter {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout; SetAlignment also writes general.alignment
  std::optional<uint64_t> tensor_count_override;
  std::optional<uint64_t> kv_count_override;
  std::vector<std::pair<std::string, TestValue>> kvs;
  std::vector<TestTensor> tensors;

  GgufWriter& Add(std::string key, TestValue v);
  GgufWriter& SetAlignment(uint32_t a);
  GgufWriter& AddTensor(std::string name, uint32_t type, std::vector<uint64_t> ne,
                        std::string data = "");

  // The file image. Tensors are laid out in order, each at the next aligned offset.
  std::string Build(GgufLayout* layout = nullptr) const;
};

// Bytes of a tensor of this ggml type and shape (whole blocks per row), or 0 if unknown.
uint64_t NaturalTensorBytes(uint32_t type, const std::vector<uint64_t>& ne);

void PatchU32(std::string* bytes, size_t at, uint32_t v);
void PatchU64(std::string* bytes, size_t at, uint64_t v);

// A small llama-architecture model (metadata + F32/Q8_0/Q4_0 tensors of consistent shapes):
// n_embd 64, 2 layers, 4 heads, 2 KV heads, n_ff 96, vocab 40, tied output.
GgufWriter TinyLlamaWriter();

// Writes `bytes` to a fresh temporary file and returns its path.
std::string WriteTempFile(const std::string& bytes, const std::string& stem);

}  // namespace tessera::test

#endif  // TESSERA_TESTS_MODEL_GGUF_WRITER_TESTUTIL_H_
