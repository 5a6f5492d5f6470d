// GgufFile: a validated, read-only view of a GGUF model file (versions 2 and 3).
//
// Ownership: Open() maps the whole file read-only (mmap, MAP_PRIVATE) and never copies tensor
// data; every TensorView, QuantMatrix, byte range and metadata string handed out points into the
// mapping and is valid as long as the GgufFile lives. Parsing reads only the header, metadata
// and tensor infos: tensor pages are not touched (no checksum over the data), so a worker that
// uses only its shard's byte ranges faults in only those pages.
//
// Validation: Open() checks everything before anything is used and fails with ONE error naming
// the file, the field and the offending value. No allocation is sized by an unchecked field:
// every count is compared with the bytes left in the file first, and all offset/size arithmetic
// is overflow-checked. A truncated or hostile file yields an error, never an out-of-bounds read.
//
// Thread-safety: immutable after Open(); all const methods may be called concurrently.
//
// ---------------------------------------------------------------------------------------------
// The GGUF format, byte by byte (all integers little-endian, no padding unless stated):
//
//   offset  size  field
//   0       4     magic: the bytes 'G' 'G' 'U' 'F' (0x47 0x47 0x55 0x46)
//   4       4     version: uint32; 1 (32-bit counts, obsolete, refused), 2 or 3 (identical on
//                 little-endian hosts; v3 only allowed big-endian files, which we refuse)
//   8       8     tensor_count: uint64, number of tensor infos
//   16      8     kv_count: uint64, number of metadata key/value pairs
//   24      ...   kv_count key/value pairs, each:
//                   key:        string (see below); by convention dotted lower_snake_case ASCII
//                   value_type: uint32 (GgufValueType)
//                   value:      encoded as per value_type:
//                     UINT8/INT8/BOOL: 1 byte (BOOL must be 0 or 1)
//                     UINT16/INT16: 2 bytes; UINT32/INT32/FLOAT32: 4; UINT64/INT64/FLOAT64: 8
//                     STRING: uint64 byte length, then that many bytes (UTF-8, no terminator)
//                     ARRAY:  uint32 element type, uint64 element count, then the elements
//                             back to back (an element may itself be an ARRAY, with its own
//                             type and count: arrays of arrays)
//   ...     ...   tensor_count tensor infos, each:
//                   name:    string (unique, at most 64 bytes)
//                   n_dims:  uint32, 1..4
//                   ne:      n_dims x uint64; ne[0] is the innermost (contiguous) dimension
//                   type:    uint32 ggml type id (kernels/quant/types.h)
//                   offset:  uint64, of the tensor's bytes from the start of the data section;
//                            a multiple of the alignment
//   ...     ...   padding with zero bytes up to the next multiple of the alignment
//   data    ...   the data section: tensor bytes. A tensor of type T holds
//                 ne[1]*ne[2]*ne[3] rows, each ne[0]/block_elems(T) blocks of block_bytes(T).
//
// The alignment is metadata key `general.alignment` (an unsigned integer, default 32; must be a
// non-zero power of two).
// ---------------------------------------------------------------------------------------------
#ifndef TESSERA_MODEL_GGUF_H_
#define TESSERA_MODEL_GGUF_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant/types.h"
#include "kernels/tensor.h"

namespace tessera {

// Metadata value type ids as stored in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "UINT32", "ARRAY", ... as the gguf Python package spells them; "unknown(<id>)" otherwise.
std::string GgufValueTypeName(uint32_t raw_type);
inline std::string GgufValueTypeName(GgufValueType t) {
  return GgufValueTypeName(static_cast<uint32_t>(t));
}

// Bytes of one encoded scalar of this type; 0 for STRING, ARRAY and unknown types.
uint64_t GgufScalarBytes(GgufValueType t);

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxArrayDepth = 8;           // nesting of arrays of arrays
inline constexpr size_t kGgufMaxTensorNameBytes = 64;  // GGUF spec (ggml's GGML_MAX_NAME)
inline constexpr size_t kGgufMaxKeyBytes = 65535;      // GGUF spec

// One metadata value. Strings and numeric arrays point into the file mapping.
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  bool is_integer() const;  // any of the 8 integer types
  bool is_float() const {
    return type_ == GgufValueType::kFloat32 || type_ == GgufValueType::kFloat64;
  }

  // Exact conversions; an error says what the value is and what was expected.
  absl::StatusOr<uint64_t> AsU64() const;  // a non-negative integer of any type
  absl::StatusOr<int64_t> AsI64() const;   // an integer of any type that fits int64
  absl::StatusOr<double> AsF64() const;    // FLOAT32 or FLOAT64
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::string_view> AsString() const;

  // Arrays (type() == kArray).
  GgufValueType element_type() const { return element_type_; }
  uint64_t size() const { return count_; }
  // Element i < size() as a value (numeric elements are decoded on the fly).
  GgufValue element(uint64_t i) const;

  // A short human-readable rendering; arrays show at most `max_elems` elements.
  std::string ToString(size_t max_elems = 8) const;

 private:
  friend class GgufParser;
  GgufValueType type_ = GgufValueType::kUint8;
  // Scalars: the raw little-endian bits (zero-extended) in u64_.
  uint64_t u64_ = 0;
  // STRING: the bytes. ARRAY of numbers/bools: raw element bytes start at data_.
  std::string_view str_;
  const uint8_t* data_ = nullptr;
  GgufValueType element_type_ = GgufValueType::kUint8;
  uint64_t count_ = 0;
  // ARRAY of STRING: one view per element.
  std::shared_ptr<const std::vector<std::string_view>> strings_;
  // ARRAY of ARRAY: the nested arrays.
  std::shared_ptr<const std::vector<GgufValue>> arrays_;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// One tensor info, validated: supported type, whole blocks per row, inside the data section.
struct GgufTensorInfo {
  std::string name;
  uint32_t raw_type = 0;                            // ggml type id as stored
  const QuantTraits* traits = nullptr;              // never null after Open()
  int n_dims = 0;                                   // 1..4
  std::array<int64_t, kMaxDims> ne = {1, 1, 1, 1};  // ne[0] innermost; unused dims are 1
  uint64_t offset = 0;                              // from the start of the data section, as stored
  uint64_t file_offset = 0;                         // from the start of the file
  uint64_t nbytes = 0;
  int64_t row_bytes = 0;  // bytes of one ne[0] row

  GgmlType type() const { return traits->type; }
  int64_t n_elems() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
};

// A contiguous slice of the file: what a worker maps/reads for its shard.
struct GgufByteRange {
  uint64_t file_offset = 0;
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
};

class GgufFile {
 public:
  // Maps and validates `path`. Errors name the path.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Validates an in-memory image (tests, fuzzing). `bytes` must outlive the result; `name`
  // stands in for the path in messages.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(std::string name, const void* bytes,
                                                              size_t size);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section

  // ---- Metadata ----
  const std::vector<GgufKeyValue>& metadata() const { return kvs_; }  // in file order
  const GgufValue* Find(std::string_view key) const;                  // nullptr if absent
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // Typed lookups. NotFound if the key is absent; InvalidArgument naming the key, its type and
  // value if it does not convert exactly (integers accept any integer type whose value fits).
  absl::StatusOr<uint32_t> GetU32(std::string_view key) const;
  absl::StatusOr<uint64_t> GetU64(std::string_view key) const;
  absl::StatusOr<int64_t> GetI64(std::string_view key) const;
  absl::StatusOr<float> GetF32(std::string_view key) const;  // FLOAT32 (or FLOAT64 that fits)
  absl::StatusOr<double> GetF64(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<std::vector<std::string_view>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetF32Array(std::string_view key) const;
  // As above, but `fallback` when the key is absent (a wrong type is still an error).
  absl::StatusOr<uint32_t> GetU32Or(std::string_view key, uint32_t fallback) const;
  absl::StatusOr<float> GetF32Or(std::string_view key, float fallback) const;
  absl::StatusOr<std::string_view> GetStringOr(std::string_view key,
                                               std::string_view fallback) const;

  // ---- Tensors ----
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order
  const GgufTensorInfo* FindTensor(std::string_view name) const;           // nullptr if absent
  absl::StatusOr<const GgufTensorInfo*> GetTensor(std::string_view name) const;

  const uint8_t* data(const GgufTensorInfo& t) const { return base_ + t.file_offset; }
  TensorView View(const GgufTensorInfo& t) const;
  // The tensor as a matrix of n_rows() rows of ne[0] columns (any n_dims).
  QuantMatrix Matrix(const GgufTensorInfo& t) const;
  // Rows [first_row, first_row + n_rows) (rows as in Matrix()): one contiguous byte range.
  absl::StatusOr<GgufByteRange> RowRange(const GgufTensorInfo& t, int64_t first_row,
                                         int64_t n_rows) const;
  // A sub-matrix: rows [row0, row0 + rows), columns [col0, col0 + cols). Column bounds must
  // fall on block boundaries of the tensor's type; the result strides by the full row.
  absl::StatusOr<QuantMatrix> SubMatrix(const GgufTensorInfo& t, int64_t row0, int64_t rows,
                                        int64_t col0, int64_t cols) const;

 private:
  friend class GgufParser;
  GgufFile() = default;

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // owned mapping (nullptr for FromBuffer or an empty file)
  size_t map_size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> kvs_;
  std::unordered_map<std::string_view, size_t> kv_index_;  // keys: views into the mapping
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;  // names: views into the mapping
};

}  // namespace tessera

#endif  // TESSERA_MODEL_GGUF_H_
