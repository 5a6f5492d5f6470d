// quant_tool: runs one reference (de)quantizer of kernels/quant on a raw file, for the Python
// test that compares Tessera's formats with the PyPI `gguf` package.
//
//   quant_tool dequantize TYPE IN_BLOCKS OUT_F32   raw blocks -> little-endian float32
//   quant_tool quantize   TYPE IN_F32    OUT_BLOCKS
//
// TYPE is a ggml type name (case-insensitive: q4_k, Q8_0, bf16 ...). The input must hold a whole
// number of blocks (dequantize) or of block elements (quantize). Exit status 0 on success, 1 on
// any error, with the reason on stderr.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/quant/types.h"

namespace {

absl::StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  }
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return data;
}

absl::Status WriteFile(const std::string& path, const void* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", path, "': ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !ok) {
    return absl::DataLossError(absl::StrCat("error writing ", size, " bytes to '", path, "'"));
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& mode, const std::string& type_name, const std::string& in,
                 const std::string& out) {
  absl::StatusOr<tessera::GgmlType> type = tessera::ParseGgmlType(type_name);
  if (!type.ok()) return type.status();
  const tessera::QuantTraits* traits = tessera::FindQuantTraits(*type);
  if (traits == nullptr) return absl::InternalError("registered type has no traits");
  absl::StatusOr<std::vector<uint8_t>> data = ReadFile(in);
  if (!data.ok()) return data.status();
  const int64_t size = static_cast<int64_t>(data->size());

  if (mode == "dequantize") {
    if (size % traits->block_bytes != 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", in, "' has ", size,
                                                     " bytes, not a whole number of ", traits->name,
                                                     " blocks of ", traits->block_bytes, " bytes"));
    }
    const int64_t n_elems = size / traits->block_bytes * traits->block_elems;
    std::vector<float> values(static_cast<size_t>(n_elems));
    traits->dequantize_ref(data->data(), values.data(), n_elems);
    return WriteFile(out, values.data(), values.size() * sizeof(float));
  }
  if (mode == "quantize") {
    if (size % static_cast<int64_t>(sizeof(float)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", in, "' has ", size, " bytes, not a whole number of float32 values"));
    }
    const int64_t n_elems = size / static_cast<int64_t>(sizeof(float));
    absl::StatusOr<int64_t> n_bytes = tessera::RowBytes(*traits, n_elems);
    if (!n_bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("'", in, "': ", n_bytes.status().message()));
    }
    std::vector<float> values(static_cast<size_t>(n_elems));
    if (n_elems > 0) std::memcpy(values.data(), data->data(), static_cast<size_t>(size));
    std::vector<uint8_t> blocks(static_cast<size_t>(*n_bytes));
    traits->quantize_ref(values.data(), blocks.data(), n_elems);
    return WriteFile(out, blocks.data(), blocks.size());
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode '", mode, "' (expected dequantize or quantize)"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: quant_tool dequantize|quantize TYPE IN_FILE OUT_FILE\n");
    return 1;
  }
  const absl::Status status = Run(argv[1], argv[2], argv[3], argv[4]);
  if (!status.ok()) {
    std::fprintf(stderr, "quant_tool: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
