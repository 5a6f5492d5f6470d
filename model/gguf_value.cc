// GgufValue decoding and GgufFile's typed metadata lookups. See gguf.h for the format.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/gguf.h"

namespace tessera {
namespace {

// Debian's Abseil has its own absl::string_view, which std::string_view does not convert to.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Prefix(const absl::Status& s, std::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(Av(prefix), s.message()));
}

bool IsSigned(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}

// Escapes control characters, quotes and backslashes; other bytes (UTF-8 text) pass through.
std::string DisplayString(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

uint64_t GgufScalarBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// GgufValueType names

std::string GgufValueTypeName(uint32_t raw) {
  static constexpr const char* kNames[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                           "UINT64", "INT64",   "FLOAT64"};
  if (raw < std::size(kNames)) return kNames[raw];
  return absl::StrCat("unknown(", raw, ")");
}

// ---------------------------------------------------------------------------------------------
// GgufValue

namespace {
bool IsIntegerType(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}
}  // namespace

bool GgufValue::is_integer() const { return IsIntegerType(type_); }

namespace {
// Sign-extends the low `bytes` bytes of raw bits.
int64_t SignExtend(uint64_t bits, uint64_t bytes) {
  if (bytes >= 8) return static_cast<int64_t>(bits);
  const unsigned shift = static_cast<unsigned>(64 - 8 * bytes);
  return static_cast<int64_t>(bits << shift) >> shift;
}
}  // namespace

absl::StatusOr<uint64_t> GgufValue::AsU64() const {
  if (!is_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufValueTypeName(type_), "; expected an integer"));
  }
  if (IsSigned(type_)) {
    const int64_t v = SignExtend(u64_, GgufScalarBytes(type_));
    if (v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("is ", v, " (", GgufValueTypeName(type_),
                                                     "); expected a non-negative integer"));
    }
    return static_cast<uint64_t>(v);
  }
  return u64_;
}

absl::StatusOr<int64_t> GgufValue::AsI64() const {
  if (!is_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufValueTypeName(type_), "; expected an integer"));
  }
  if (IsSigned(type_)) return SignExtend(u64_, GgufScalarBytes(type_));
  if (u64_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("is ", u64_, " (UINT64); expected an integer that fits INT64"));
  }
  return static_cast<int64_t>(u64_);
}

absl::StatusOr<double> GgufValue::AsF64() const {
  if (type_ == GgufValueType::kFloat32) {
    float f;
    const auto bits = static_cast<uint32_t>(u64_);
    std::memcpy(&f, &bits, 4);
    return static_cast<double>(f);
  }
  if (type_ == GgufValueType::kFloat64) {
    double d;
    std::memcpy(&d, &u64_, 8);
    return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("has type ", GgufValueTypeName(type_), "; expected FLOAT32 or FLOAT64"));
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ != GgufValueType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufValueTypeName(type_), "; expected BOOL"));
  }
  return u64_ != 0;
}

absl::StatusOr<std::string_view> GgufValue::AsString() const {
  if (type_ != GgufValueType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("has type ", GgufValueTypeName(type_), "; expected STRING"));
  }
  return str_;
}

GgufValue GgufValue::element(uint64_t i) const {
  GgufValue v;
  if (type_ != GgufValueType::kArray || i >= count_) return v;
  v.type_ = element_type_;
  if (element_type_ == GgufValueType::kString) {
    v.str_ = (*strings_)[i];
  } else if (element_type_ == GgufValueType::kArray) {
    v = (*arrays_)[i];
  } else {
    const uint64_t n = GgufScalarBytes(element_type_);
    std::memcpy(&v.u64_, data_ + i * n, n);
  }
  return v;
}

std::string GgufValue::ToString(size_t max_elems) const {
  switch (type_) {
    case GgufValueType::kString:
      return absl::StrCat("\"", DisplayString(str_), "\"");
    case GgufValueType::kBool:
      return u64_ ? "true" : "false";
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      return absl::StrFormat("%.9g", *AsF64());
    case GgufValueType::kArray: {
      std::string out = "[";
      for (uint64_t i = 0; i < count_ && i < max_elems; ++i) {
        absl::StrAppend(&out, i ? ", " : "", element(i).ToString(max_elems));
      }
      if (count_ > max_elems) absl::StrAppend(&out, ", ... (", count_, " elements)");
      return out + "]";
    }
    default:
      if (IsSigned(type_)) return absl::StrCat(SignExtend(u64_, GgufScalarBytes(type_)));
      return absl::StrCat(u64_);
  }
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

namespace {

template <typename T>
absl::StatusOr<T> Lookup(const GgufFile& f, std::string_view key,
                         absl::StatusOr<T> (*convert)(const GgufValue&)) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) {
    return absl::NotFoundError(absl::StrCat(f.path(), ": metadata key '", Av(key), "' is missing"));
  }
  absl::StatusOr<T> r = convert(*v);
  if (!r.ok()) return Prefix(r.status(), absl::StrCat(f.path(), ": metadata key '", Av(key), "' "));
  return r;
}

template <typename T>
absl::StatusOr<T> LookupOr(const GgufFile& f, std::string_view key, T fallback,
                           absl::StatusOr<T> (*convert)(const GgufValue&)) {
  if (!f.Has(key)) return fallback;
  return Lookup<T>(f, key, convert);
}

absl::StatusOr<uint32_t> ToU32(const GgufValue& v) {
  absl::StatusOr<uint64_t> u = v.AsU64();
  if (!u.ok()) return u.status();
  if (*u > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("is ", *u, " (", GgufValueTypeName(v.type()),
                                                   "); expected a value that fits UINT32"));
  }
  return static_cast<uint32_t>(*u);
}
absl::StatusOr<uint64_t> ToU64(const GgufValue& v) { return v.AsU64(); }
absl::StatusOr<int64_t> ToI64(const GgufValue& v) { return v.AsI64(); }
absl::StatusOr<double> ToF64(const GgufValue& v) { return v.AsF64(); }
absl::StatusOr<float> ToF32(const GgufValue& v) {
  absl::StatusOr<double> d = v.AsF64();
  if (!d.ok()) return d.status();
  if (std::isfinite(*d) && std::fabs(*d) > FLT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("is ", *d, " (FLOAT64); expected a value that fits FLOAT32"));
  }
  return static_cast<float>(*d);
}
absl::StatusOr<bool> ToBool(const GgufValue& v) { return v.AsBool(); }
absl::StatusOr<std::string_view> ToString(const GgufValue& v) { return v.AsString(); }

absl::Status NotArrayOf(const GgufValue& v, std::string_view expected) {
  std::string actual = GgufValueTypeName(v.type());
  if (v.type() == GgufValueType::kArray) {
    actual = absl::StrCat("ARRAY of ", GgufValueTypeName(v.element_type()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("has type ", actual, "; expected ARRAY of ", Av(expected)));
}

absl::StatusOr<std::vector<std::string_view>> ToStringArray(const GgufValue& v) {
  if (v.type() != GgufValueType::kArray || v.element_type() != GgufValueType::kString) {
    return NotArrayOf(v, "STRING");
  }
  std::vector<std::string_view> out;
  out.reserve(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) out.push_back(*v.element(i).AsString());
  return out;
}

absl::StatusOr<std::vector<int64_t>> ToIntArray(const GgufValue& v) {
  if (v.type() != GgufValueType::kArray || !IsIntegerType(v.element_type())) {
    return NotArrayOf(v, "integers");
  }
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) {
    absl::StatusOr<int64_t> x = v.element(i).AsI64();
    if (!x.ok()) return Prefix(x.status(), absl::StrCat("element ", i, " "));
    out.push_back(*x);
  }
  return out;
}

absl::StatusOr<std::vector<float>> ToF32Array(const GgufValue& v) {
  if (v.type() != GgufValueType::kArray || v.element_type() != GgufValueType::kFloat32) {
    return NotArrayOf(v, "FLOAT32");
  }
  std::vector<float> out;
  out.reserve(v.size());
  for (uint64_t i = 0; i < v.size(); ++i) out.push_back(static_cast<float>(*v.element(i).AsF64()));
  return out;
}

}  // namespace

absl::StatusOr<uint32_t> GgufFile::GetU32(std::string_view key) const {
  return Lookup<uint32_t>(*this, key, ToU32);
}
absl::StatusOr<uint64_t> GgufFile::GetU64(std::string_view key) const {
  return Lookup<uint64_t>(*this, key, ToU64);
}
absl::StatusOr<int64_t> GgufFile::GetI64(std::string_view key) const {
  return Lookup<int64_t>(*this, key, ToI64);
}
absl::StatusOr<float> GgufFile::GetF32(std::string_view key) const {
  return Lookup<float>(*this, key, ToF32);
}
absl::StatusOr<double> GgufFile::GetF64(std::string_view key) const {
  return Lookup<double>(*this, key, ToF64);
}
absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  return Lookup<bool>(*this, key, ToBool);
}
absl::StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  return Lookup<std::string_view>(*this, key, ToString);
}
absl::StatusOr<std::vector<std::string_view>> GgufFile::GetStringArray(std::string_view key) const {
  return Lookup<std::vector<std::string_view>>(*this, key, ToStringArray);
}
absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  return Lookup<std::vector<int64_t>>(*this, key, ToIntArray);
}
absl::StatusOr<std::vector<float>> GgufFile::GetF32Array(std::string_view key) const {
  return Lookup<std::vector<float>>(*this, key, ToF32Array);
}
absl::StatusOr<uint32_t> GgufFile::GetU32Or(std::string_view key, uint32_t fallback) const {
  return LookupOr<uint32_t>(*this, key, fallback, ToU32);
}
absl::StatusOr<float> GgufFile::GetF32Or(std::string_view key, float fallback) const {
  return LookupOr<float>(*this, key, fallback, ToF32);
}
absl::StatusOr<std::string_view> GgufFile::GetStringOr(std::string_view key,
                                                       std::string_view fallback) const {
  return LookupOr<std::string_view>(*this, key, fallback, ToString);
}

}  // namespace tessera
