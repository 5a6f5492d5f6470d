// GGUF parsing and validation. The format is documented byte by byte in gguf.h.
//
// Safety argument: every read goes through Cursor, which checks the bytes left before touching
// memory; every count that sizes a container is first bounded by the bytes left divided by the
// smallest possible encoding of one element; all offset/size arithmetic uses the checked helpers
// below. So a hostile file can make us fail, but not read out of bounds or allocate more than a
// small multiple of its own size.
#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tessera {

static_assert(
    std::endian::native == std::endian::little,
    "the GGUF reader decodes little-endian files by memcpy; port it for big-endian hosts");

namespace {

// Debian's Abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---- Overflow-checked arithmetic on file-controlled quantities ----
bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
// Rounds `x` up to a multiple of the power of two `align`.
bool CheckedAlignUp(uint64_t x, uint64_t align, uint64_t* out) {
  uint64_t t;
  if (!CheckedAdd(x, align - 1, &t)) return false;
  *out = t & ~(align - 1);
  return true;
}

bool IsKnownValueType(uint32_t raw) {
  return raw <= static_cast<uint32_t>(GgufValueType::kFloat64);
}

// Smallest number of bytes one encoded element of this type can occupy.
uint64_t MinEncodedBytes(GgufValueType t) {
  if (t == GgufValueType::kString) return 8;     // length only
  if (t == GgufValueType::kArray) return 4 + 8;  // element type + count
  return GgufScalarBytes(t);
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. Returns the byte index
// of the first invalid sequence, or npos.
size_t FindInvalidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (n - i < static_cast<size_t>(len)) return i;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// A name as it may appear in a message: hostile bytes escaped, long names shortened.
std::string Printable(std::string_view s) {
  constexpr size_t kMax = 80;
  std::string out = absl::CHexEscape(Av(s.substr(0, kMax)));
  if (s.size() > kMax) absl::StrAppend(&out, "...");
  return out;
}

// Reads little-endian fields from [base, base + size) without ever reading past the end.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return base_ + pos_; }

  // Error unless `n` more bytes exist; `what` names the field being read.
  absl::Status Need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return absl::InvalidArgumentError(absl::StrCat("truncated: ", Av(what), " needs ", n,
                                                     " bytes at offset ", pos_,
                                                     " but the file ends at ", size_));
    }
    return absl::OkStatus();
  }
  absl::Status Skip(uint64_t n, std::string_view what) {
    if (absl::Status s = Need(n, what); !s.ok()) return s;
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (absl::Status s = Need(sizeof(T), what); !s.ok()) return s;
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // A GGUF string: uint64 length + bytes.
  absl::StatusOr<std::string_view> ReadString(std::string_view what) {
    const uint64_t at = pos_;
    absl::StatusOr<uint64_t> len = Read<uint64_t>(absl::StrCat(Av(what), " length"));
    if (!len.ok()) return len.status();
    if (*len > remaining()) {
      return absl::InvalidArgumentError(absl::StrCat(Av(what), " length ", *len, " at offset ", at,
                                                     " exceeds the ", remaining(),
                                                     " bytes left in the file"));
    }
    std::string_view s(reinterpret_cast<const char*>(base_ + pos_), *len);
    pos_ += *len;
    return s;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

absl::Status Prefix(const absl::Status& s, std::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(Av(prefix), s.message()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parser

class GgufParser {
 public:
  explicit GgufParser(GgufFile* f) : f_(f), in_(f->base_, f->size_) {}

  absl::Status Parse() {
    if (absl::Status s = ParseHeader(); !s.ok()) return s;
    if (absl::Status s = ParseMetadata(); !s.ok()) return s;
    if (absl::Status s = ApplyAlignment(); !s.ok()) return s;
    if (absl::Status s = ParseTensorInfos(); !s.ok()) return s;
    return PlaceTensors();
  }

 private:
  absl::Status Error(std::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat(f_->path_, ": ", Av(msg)));
  }
  absl::Status Wrap(const absl::Status& s, std::string_view context) const {
    return Prefix(s, absl::StrCat(f_->path_, ": ", Av(context)));
  }

  absl::Status ParseHeader() {
    if (f_->size_ < 4) {
      return Error(absl::StrCat("not a GGUF file: it is only ", f_->size_,
                                " bytes long (a GGUF header is 24 bytes)"));
    }
    if (std::memcmp(f_->base_, "GGUF", 4) != 0) {
      return Error(absl::StrCat(
          "not a GGUF file: magic is \"",
          absl::CHexEscape(absl::string_view(reinterpret_cast<const char*>(f_->base_), 4)),
          "\", expected \"GGUF\""));
    }
    in_.Skip(4, "magic").IgnoreError();
    absl::StatusOr<uint32_t> version = in_.Read<uint32_t>("version");
    if (!version.ok()) return Wrap(version.status(), "header: ");
    if (*version == 1) {
      return Error(
          "GGUF version 1 is not supported (it predates 64-bit counts); re-convert the "
          "model with a current GGUF tool");
    }
    if (*version == 0x02000000u || *version == 0x03000000u) {
      return Error(
          absl::StrCat("GGUF version field is ", *version,
                       ": this looks like a big-endian GGUF file, which is not supported"));
    }
    if (*version != 2 && *version != 3) {
      return Error(absl::StrCat("unsupported GGUF version ", *version, " (supported: 2 and 3)"));
    }
    f_->version_ = *version;
    absl::StatusOr<uint64_t> tensor_count = in_.Read<uint64_t>("tensor_count");
    if (!tensor_count.ok()) return Wrap(tensor_count.status(), "header: ");
    absl::StatusOr<uint64_t> kv_count = in_.Read<uint64_t>("kv_count");
    if (!kv_count.ok()) return Wrap(kv_count.status(), "header: ");
    tensor_count_ = *tensor_count;
    kv_count_ = *kv_count;
    // Quick plausibility checks before anything is sized by these counts. Exact checks against
    // the bytes really left happen again where each list is read.
    if (kv_count_ > in_.remaining() / kMinKvBytes) {
      return Error(absl::StrCat("header: kv_count ", kv_count_, " is impossible: only ",
                                in_.remaining(),
                                " bytes follow the header and each key/value "
                                "takes at least ",
                                kMinKvBytes));
    }
    if (tensor_count_ > (in_.remaining() - kv_count_ * kMinKvBytes) / kMinTensorInfoBytes) {
      return Error(absl::StrCat("header: tensor_count ", tensor_count_, " is impossible: only ",
                                in_.remaining(),
                                " bytes follow the header and each tensor info "
                                "takes at least ",
                                kMinTensorInfoBytes));
    }
    return absl::OkStatus();
  }

  absl::Status ParseMetadata() {
    f_->kvs_.reserve(kv_count_);  // bounded by the file size above
    f_->kv_index_.reserve(kv_count_);
    for (uint64_t i = 0; i < kv_count_; ++i) {
      const uint64_t at = in_.pos();
      const std::string ctx = absl::StrCat("metadata #", i, " (offset ", at, "): ");
      absl::StatusOr<std::string_view> key = in_.ReadString("key");
      if (!key.ok()) return Wrap(key.status(), ctx);
      if (key->empty()) return Error(absl::StrCat(ctx, "key is empty"));
      if (key->size() > kGgufMaxKeyBytes) {
        return Error(absl::StrCat(ctx, "key length ", key->size(), " exceeds the limit of ",
                                  kGgufMaxKeyBytes, " bytes"));
      }
      if (size_t bad = FindInvalidUtf8(*key); bad != std::string_view::npos) {
        return Error(
            absl::StrCat(ctx, "key \"", Printable(*key), "\" is not valid UTF-8 (byte ", bad, ")"));
      }
      const std::string kctx = absl::StrCat("metadata key '", Printable(*key), "': ");
      if (f_->kv_index_.count(*key)) {
        return Error(
            absl::StrCat(kctx, "duplicate key (also at metadata #", f_->kv_index_[*key], ")"));
      }
      absl::StatusOr<uint32_t> type = in_.Read<uint32_t>("value type");
      if (!type.ok()) return Wrap(type.status(), kctx);
      GgufValue value;
      if (absl::Status s = ParseValue(*type, 0, &value); !s.ok()) return Wrap(s, kctx);
      f_->kv_index_.emplace(*key, f_->kvs_.size());
      f_->kvs_.push_back(GgufKeyValue{std::string(*key), std::move(value)});
    }
    return absl::OkStatus();
  }

  // Parses one value of raw type `raw` at the cursor. Errors are relative to the key.
  absl::Status ParseValue(uint32_t raw, int depth, GgufValue* out) {
    if (!IsKnownValueType(raw)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown value type ", raw, " (known: 0..12)"));
    }
    const auto type = static_cast<GgufValueType>(raw);
    out->type_ = type;
    if (type == GgufValueType::kString) {
      absl::StatusOr<std::string_view> s = in_.ReadString("string");
      if (!s.ok()) return s.status();
      out->str_ = *s;
      return absl::OkStatus();
    }
    if (type != GgufValueType::kArray) {
      const uint64_t n = GgufScalarBytes(type);
      if (absl::Status s = in_.Need(n, GgufValueTypeName(type)); !s.ok()) return s;
      std::memcpy(&out->u64_, in_.here(), n);
      if (type == GgufValueType::kBool && out->u64_ > 1) {
        return absl::InvalidArgumentError(absl::StrCat("BOOL value is ", out->u64_, " at offset ",
                                                       in_.pos(), "; must be 0 or 1"));
      }
      return in_.Skip(n, "value");
    }
    return ParseArray(depth + 1, out);
  }

  // An ARRAY value after its type word: element type, count, elements. `depth` is 1 for a
  // top-level array.
  absl::Status ParseArray(int depth, GgufValue* out) {
    out->type_ = GgufValueType::kArray;
    if (depth > kGgufMaxArrayDepth) {
      return absl::InvalidArgumentError(absl::StrCat(
          "arrays nested deeper than ", kGgufMaxArrayDepth, " levels at offset ", in_.pos()));
    }
    absl::StatusOr<uint32_t> elem_raw = in_.Read<uint32_t>("array element type");
    if (!elem_raw.ok()) return elem_raw.status();
    if (!IsKnownValueType(*elem_raw)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown array element type ", *elem_raw, " (known: 0..12)"));
    }
    const auto elem = static_cast<GgufValueType>(*elem_raw);
    const uint64_t count_at = in_.pos();
    absl::StatusOr<uint64_t> count = in_.Read<uint64_t>("array element count");
    if (!count.ok()) return count.status();
    const uint64_t min_bytes = MinEncodedBytes(elem);
    if (*count > in_.remaining() / min_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "array of ", GgufValueTypeName(elem), " element count ", *count, " at offset ", count_at,
          " needs at least ", min_bytes, " bytes per element but only ", in_.remaining(),
          " bytes are left in the file"));
    }
    out->element_type_ = elem;
    out->count_ = *count;
    out->data_ = in_.here();
    if (elem == GgufValueType::kString) {
      auto strings = std::make_shared<std::vector<std::string_view>>();
      strings->reserve(*count);  // bounded: count <= remaining / 8
      for (uint64_t i = 0; i < *count; ++i) {
        absl::StatusOr<std::string_view> s = in_.ReadString("string");
        if (!s.ok()) return Prefix(s.status(), absl::StrCat("array element ", i, ": "));
        strings->push_back(*s);
      }
      out->strings_ = std::move(strings);
      return absl::OkStatus();
    }
    if (elem == GgufValueType::kArray) {
      // Each element is itself (element type, count, elements), without a value-type word.
      auto arrays = std::make_shared<std::vector<GgufValue>>();
      arrays->reserve(*count);  // bounded: count <= remaining / 12
      for (uint64_t i = 0; i < *count; ++i) {
        GgufValue v;
        if (absl::Status s = ParseArray(depth + 1, &v); !s.ok()) {
          return Prefix(s, absl::StrCat("array element ", i, ": "));
        }
        arrays->push_back(std::move(v));
      }
      out->arrays_ = std::move(arrays);
      return absl::OkStatus();
    }
    const uint64_t n = *count * GgufScalarBytes(elem);  // <= remaining, so no overflow
    if (elem == GgufValueType::kBool) {
      for (uint64_t i = 0; i < n; ++i) {
        if (in_.here()[i] > 1) {
          return absl::InvalidArgumentError(absl::StrCat("BOOL array element ", i, " is ",
                                                         static_cast<int>(in_.here()[i]),
                                                         "; must be 0 or 1"));
        }
      }
    }
    return in_.Skip(n, "array elements");
  }

  absl::Status ApplyAlignment() {
    const GgufValue* v = f_->Find("general.alignment");
    if (v == nullptr) return absl::OkStatus();
    absl::StatusOr<uint64_t> a = v->AsU64();
    if (!a.ok()) return Wrap(a.status(), "metadata key 'general.alignment' ");
    if (*a == 0 || (*a & (*a - 1)) != 0 || *a > std::numeric_limits<uint32_t>::max()) {
      return Error(absl::StrCat("metadata key 'general.alignment' is ", *a,
                                "; it must be a non-zero power of two that fits UINT32"));
    }
    f_->alignment_ = *a;
    return absl::OkStatus();
  }

  absl::Status ParseTensorInfos() {
    if (tensor_count_ > in_.remaining() / kMinTensorInfoBytes) {
      return Error(absl::StrCat("header: tensor_count ", tensor_count_, " is impossible: only ",
                                in_.remaining(),
                                " bytes follow the metadata and each tensor "
                                "info takes at least ",
                                kMinTensorInfoBytes));
    }
    f_->tensors_.reserve(tensor_count_);
    f_->tensor_index_.reserve(tensor_count_);
    for (uint64_t i = 0; i < tensor_count_; ++i) {
      const std::string ctx = absl::StrCat("tensor #", i, " (offset ", in_.pos(), "): ");
      absl::StatusOr<std::string_view> name = in_.ReadString("name");
      if (!name.ok()) return Wrap(name.status(), ctx);
      if (name->empty()) return Error(absl::StrCat(ctx, "name is empty"));
      if (name->size() > kGgufMaxTensorNameBytes) {
        return Error(absl::StrCat(ctx, "name \"", Printable(*name), "\" is ", name->size(),
                                  " bytes long; the limit is ", kGgufMaxTensorNameBytes));
      }
      if (size_t bad = FindInvalidUtf8(*name); bad != std::string_view::npos) {
        return Error(absl::StrCat(ctx, "name \"", Printable(*name), "\" is not valid UTF-8 (byte ",
                                  bad, ")"));
      }
      const std::string tctx = absl::StrCat("tensor '", Av(*name), "': ");
      if (auto it = f_->tensor_index_.find(*name); it != f_->tensor_index_.end()) {
        return Error(absl::StrCat(tctx, "duplicate tensor name (also tensor #", it->second, ")"));
      }
      GgufTensorInfo t;
      t.name = std::string(*name);
      absl::StatusOr<uint32_t> n_dims = in_.Read<uint32_t>("n_dims");
      if (!n_dims.ok()) return Wrap(n_dims.status(), tctx);
      if (*n_dims < 1 || *n_dims > static_cast<uint32_t>(kMaxDims)) {
        return Error(absl::StrCat(tctx, "n_dims is ", *n_dims, "; must be 1..", kMaxDims));
      }
      t.n_dims = static_cast<int>(*n_dims);
      uint64_t n_elems = 1;
      for (int d = 0; d < t.n_dims; ++d) {
        absl::StatusOr<uint64_t> ne = in_.Read<uint64_t>(absl::StrCat("ne[", d, "]"));
        if (!ne.ok()) return Wrap(ne.status(), tctx);
        if (*ne == 0 || *ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return Error(absl::StrCat(tctx, "ne[", d, "] is ", *ne, "; must be 1..2^63-1"));
        }
        if (!CheckedMul(n_elems, *ne, &n_elems) ||
            n_elems > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return Error(absl::StrCat(tctx, "shape ", ShapeString(t, d, *ne),
                                    " has more than 2^63-1 elements"));
        }
        t.ne[d] = static_cast<int64_t>(*ne);
      }
      absl::StatusOr<uint32_t> type = in_.Read<uint32_t>("type");
      if (!type.ok()) return Wrap(type.status(), tctx);
      t.raw_type = *type;
      t.traits = FindQuantTraits(*type);
      if (t.traits == nullptr) {
        return Error(absl::StrCat(tctx, "type ", GgmlTypeName(*type), " (id ", *type,
                                  ") is not supported by Tessera"));
      }
      if (t.ne[0] % t.traits->block_elems != 0) {
        return Error(absl::StrCat(tctx, "row length ne[0] = ", t.ne[0], " is not a multiple of ",
                                  t.traits->block_elems, ", the block size of ", t.traits->name));
      }
      uint64_t row_bytes, nbytes;
      if (!CheckedMul(static_cast<uint64_t>(t.ne[0] / t.traits->block_elems),
                      static_cast<uint64_t>(t.traits->block_bytes), &row_bytes) ||
          !CheckedMul(row_bytes, static_cast<uint64_t>(t.n_rows()), &nbytes)) {
        return Error(absl::StrCat(tctx, "size of shape ", ShapeString(t, t.n_dims, 0), " in ",
                                  t.traits->name, " overflows 64 bits"));
      }
      t.row_bytes = static_cast<int64_t>(row_bytes);
      t.nbytes = nbytes;
      absl::StatusOr<uint64_t> offset = in_.Read<uint64_t>("offset");
      if (!offset.ok()) return Wrap(offset.status(), tctx);
      t.offset = *offset;
      f_->tensors_.push_back(std::move(t));
      f_->tensor_index_.emplace(*name, f_->tensors_.size() - 1);
    }
    return absl::OkStatus();
  }

  // "[a, b, c]" of the first `n` dims of t, plus `next` if non-zero.
  static std::string ShapeString(const GgufTensorInfo& t, int n, uint64_t next) {
    std::string s = "[";
    for (int d = 0; d < n; ++d) absl::StrAppend(&s, d ? ", " : "", t.ne[d]);
    if (next) absl::StrAppend(&s, n ? ", " : "", next);
    return s + "]";
  }

  absl::Status PlaceTensors() {
    uint64_t data_offset;
    if (!CheckedAlignUp(in_.pos(), f_->alignment_, &data_offset)) {
      return Error(absl::StrCat("aligning the data section start ", in_.pos(), " to ",
                                f_->alignment_, " overflows"));
    }
    f_->data_offset_ = data_offset;
    for (GgufTensorInfo& t : f_->tensors_) {
      const std::string tctx = absl::StrCat("tensor '", t.name, "': ");
      if (t.offset % f_->alignment_ != 0) {
        return Error(absl::StrCat(tctx, "offset ", t.offset, " is not a multiple of the alignment ",
                                  f_->alignment_));
      }
      uint64_t begin, end;
      if (!CheckedAdd(data_offset, t.offset, &begin) || !CheckedAdd(begin, t.nbytes, &end) ||
          end > f_->size_) {
        std::string range =
            CheckedAdd(data_offset, t.offset, &begin)
                ? (CheckedAdd(begin, t.nbytes, &end) ? absl::StrCat("[", begin, ", ", end, ")")
                                                     : absl::StrCat("[", begin, ", overflow)"))
                : absl::StrCat("at data offset ", t.offset);
        return Error(absl::StrCat(tctx, "data ", range, " (", t.nbytes,
                                  " bytes) extends past the end of the file (", f_->size_,
                                  " bytes)"));
      }
      t.file_offset = begin;
    }
    // Overlap: sort by offset and compare neighbours.
    std::vector<size_t> order(f_->tensors_.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return f_->tensors_[a].offset < f_->tensors_[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& a = f_->tensors_[order[k - 1]];
      const GgufTensorInfo& b = f_->tensors_[order[k]];
      if (a.file_offset + a.nbytes > b.file_offset) {
        return Error(absl::StrCat("tensor '", a.name, "' data [", a.file_offset, ", ",
                                  a.file_offset + a.nbytes, ") overlaps tensor '", b.name,
                                  "' data [", b.file_offset, ", ", b.file_offset + b.nbytes, ")"));
      }
    }
    return absl::OkStatus();
  }

  // key length + 1 key byte + value type + 1 value byte
  static constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
  // name length + 1 name byte + n_dims + one dim + type + offset
  static constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

  GgufFile* f_;
  Cursor in_;
  uint64_t tensor_count_ = 0;
  uint64_t kv_count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// GgufFile

GgufFile::~GgufFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string msg = absl::StrCat("cannot open '", path, "': ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (st.st_size > 0) {
    // MAP_PRIVATE + PROT_READ: the weights stay in the page cache, shared between processes
    // that map the same file; nothing is read until a page is touched.
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot map '", path, "' (", st.st_size, " bytes): ", std::strerror(err)));
    }
    f->map_ = p;
    f->map_size_ = static_cast<size_t>(st.st_size);
    f->base_ = static_cast<const uint8_t*>(p);
  } else {
    static const uint8_t kEmpty = 0;
    f->base_ = &kEmpty;
  }
  ::close(fd);  // the mapping keeps its own reference to the file
  GgufParser parser(f.get());
  if (absl::Status s = parser.Parse(); !s.ok()) return s;
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(std::string name, const void* bytes,
                                                               size_t size) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  static const uint8_t kEmpty = 0;
  f->base_ = bytes != nullptr ? static_cast<const uint8_t*>(bytes) : &kEmpty;
  f->size_ = bytes != nullptr ? size : 0;
  GgufParser parser(f.get());
  if (absl::Status s = parser.Parse(); !s.ok()) return s;
  return f;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const GgufTensorInfo*> GgufFile::GetTensor(std::string_view name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": tensor '", Av(name), "' is missing"));
  }
  return t;
}

TensorView GgufFile::View(const GgufTensorInfo& t) const {
  TensorView v;
  v.type = t.type();
  v.n_dims = t.n_dims;
  v.ne = t.ne;
  v.data = data(t);
  v.nbytes = static_cast<int64_t>(t.nbytes);
  return v;
}

QuantMatrix GgufFile::Matrix(const GgufTensorInfo& t) const {
  QuantMatrix m;
  m.type = t.type();
  m.rows = t.n_rows();
  m.cols = t.ne[0];
  m.row_bytes = t.row_bytes;
  m.data = data(t);
  return m;
}

absl::StatusOr<GgufByteRange> GgufFile::RowRange(const GgufTensorInfo& t, int64_t first_row,
                                                 int64_t n_rows) const {
  if (first_row < 0 || n_rows < 0 || first_row > t.n_rows() || n_rows > t.n_rows() - first_row) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": tensor '", t.name, "': rows [", first_row,
                                              ", +", n_rows, ") are outside its ", t.n_rows(),
                                              " rows"));
  }
  GgufByteRange r;
  r.file_offset = t.file_offset + static_cast<uint64_t>(first_row) * t.row_bytes;
  r.nbytes = static_cast<uint64_t>(n_rows) * t.row_bytes;
  r.data = base_ + r.file_offset;
  return r;
}

absl::StatusOr<QuantMatrix> GgufFile::SubMatrix(const GgufTensorInfo& t, int64_t row0, int64_t rows,
                                                int64_t col0, int64_t cols) const {
  absl::StatusOr<QuantMatrix> m = SliceMatrix(Matrix(t), row0, rows, col0, cols);
  if (!m.ok()) {
    return absl::Status(m.status().code(), absl::StrCat(path_, ": tensor '", t.name, "': ",
                                                        m.status().message()));
  }
  return m;
}

}  // namespace tessera
