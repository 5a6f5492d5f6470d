// The table from GGUF type id to format traits. Adding a format: write its block struct and
// reference code in one file of this folder, then add one row here.
#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/quant/float.h"
#include "kernels/quant/kquants.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

constexpr QuantTraits kTraits[] = {
    {GgmlType::kF32, "F32", 1, 4, DequantizeF32Ref, QuantizeF32Ref},
    {GgmlType::kF16, "F16", 1, 2, DequantizeF16Ref, QuantizeF16Ref},
    {GgmlType::kQ4_0, "Q4_0", kQK4_0, sizeof(BlockQ4_0), DequantizeQ4_0Ref, QuantizeQ4_0Ref},
    {GgmlType::kQ4_1, "Q4_1", kQK4_1, sizeof(BlockQ4_1), DequantizeQ4_1Ref, QuantizeQ4_1Ref},
    {GgmlType::kQ5_0, "Q5_0", kQK5_0, sizeof(BlockQ5_0), DequantizeQ5_0Ref, QuantizeQ5_0Ref},
    {GgmlType::kQ5_1, "Q5_1", kQK5_1, sizeof(BlockQ5_1), DequantizeQ5_1Ref, QuantizeQ5_1Ref},
    {GgmlType::kQ8_0, "Q8_0", kQK8_0, sizeof(BlockQ8_0), DequantizeQ8_0Ref, QuantizeQ8_0Ref},
    {GgmlType::kQ2_K, "Q2_K", kQK_K, sizeof(BlockQ2_K), DequantizeQ2_KRef, QuantizeQ2_KRef},
    {GgmlType::kQ3_K, "Q3_K", kQK_K, sizeof(BlockQ3_K), DequantizeQ3_KRef, QuantizeQ3_KRef},
    {GgmlType::kQ4_K, "Q4_K", kQK_K, sizeof(BlockQ4_K), DequantizeQ4_KRef, QuantizeQ4_KRef},
    {GgmlType::kQ5_K, "Q5_K", kQK_K, sizeof(BlockQ5_K), DequantizeQ5_KRef, QuantizeQ5_KRef},
    {GgmlType::kQ6_K, "Q6_K", kQK_K, sizeof(BlockQ6_K), DequantizeQ6_KRef, QuantizeQ6_KRef},
    {GgmlType::kBF16, "BF16", 1, 2, DequantizeBF16Ref, QuantizeBF16Ref},
};

constexpr int kNumTraits = static_cast<int>(sizeof(kTraits) / sizeof(kTraits[0]));

// ggml's names for every id up to kMaxKnownGgmlTypeId; "" marks ids ggml retired.
constexpr std::array<const char*, kMaxKnownGgmlTypeId + 1> kNames = {
    "F32",     "F16",    "Q4_0",   "Q4_1",  "",       "",       "Q5_0",  "Q5_1",  "Q8_0",
    "Q8_1",    "Q2_K",   "Q3_K",   "Q4_K",  "Q5_K",   "Q6_K",   "Q8_K",  "IQ2_XXS", "IQ2_XS",
    "IQ3_XXS", "IQ1_S",  "IQ4_NL", "IQ3_S", "IQ2_S",  "IQ4_XS", "I8",    "I16",   "I32",
    "I64",     "F64",    "IQ1_M",  "BF16",  "",       "",       "",      "TQ1_0", "TQ2_0",
    "",        "",       "",       "MXFP4", "NVFP4",  "Q1_0"};

}  // namespace

const QuantTraits* FindQuantTraits(uint32_t raw_type_id) {
  for (const QuantTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == raw_type_id) return &t;
  }
  return nullptr;
}

std::string GgmlTypeName(uint32_t raw_type_id) {
  if (raw_type_id <= kMaxKnownGgmlTypeId && kNames[raw_type_id][0] != '\0') {
    return kNames[raw_type_id];
  }
  return absl::StrCat("unknown(", raw_type_id, ")");
}

absl::StatusOr<GgmlType> ParseGgmlType(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (const QuantTraits& t : kTraits) {
    if (upper == t.name) return t.type;
  }
  std::string known;
  for (const QuantTraits& t : kTraits) absl::StrAppend(&known, known.empty() ? "" : ", ", t.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantization type '", std::string(name), "' (known: ", known, ")"));
}

absl::StatusOr<int64_t> RowBytes(const QuantTraits& traits, int64_t n_elems) {
  if (n_elems < 0 || n_elems % traits.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("a ", traits.name, " row of ", n_elems,
                                                   " elements is not a whole number of ",
                                                   traits.block_elems, "-element blocks"));
  }
  return n_elems / traits.block_elems * traits.block_bytes;
}

const QuantTraits* const* AllQuantTraits(int* count) {
  static const auto* const kPtrs = [] {
    auto* p = new std::array<const QuantTraits*, kNumTraits>();
    for (int i = 0; i < kNumTraits; ++i) (*p)[i] = &kTraits[i];
    return p;
  }();
  *count = kNumTraits;
  return kPtrs->data();
}

}  // namespace tessera
