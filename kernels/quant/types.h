// Quantization type registry: the GGUF/ggml tensor type ids and, for each format Tessera
// implements, its traits (block geometry and reference conversions).
//
// This is the one place that maps a raw GGUF type id to behaviour. Fast kernels register their
// own per-type tables (kernels/cpu/), keyed by the same enum.
//
// Thread-safety: everything here is immutable after static initialisation.
#ifndef TESSERA_KERNELS_QUANT_TYPES_H_
#define TESSERA_KERNELS_QUANT_TYPES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera {

// Type ids as stored in GGUF tensor infos (ggml's `enum ggml_type`). Ids that ggml has retired
// (4, 5: Q4_2/Q4_3) or that Tessera does not implement still get names for error messages.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// Largest raw id we give a name to; ids above are "unknown".
inline constexpr uint32_t kMaxKnownGgmlTypeId = 41;

// Elements per super-block of the k-quants (ggml's QK_K).
inline constexpr int64_t kQK_K = 256;

// Converts `n_elems` elements (a multiple of block_elems) between float and the stored format.
using DequantizeFn = void (*)(const void* blocks, float* out, int64_t n_elems);
using QuantizeFn = void (*)(const float* in, void* blocks, int64_t n_elems);

struct QuantTraits {
  GgmlType type;
  const char* name;       // "Q4_K", as ggml and the gguf package spell it
  int64_t block_elems;    // weights per block (1 for float formats)
  int64_t block_bytes;    // bytes per block
  DequantizeFn dequantize_ref;  // plain, obviously-right reference
  QuantizeFn quantize_ref;      // reference round-to-nearest quantizer
};

// Traits of a format Tessera implements, or nullptr (unknown id, or a known ggml type such as
// Q8_1/IQ2_XXS that Tessera cannot load).
const QuantTraits* FindQuantTraits(uint32_t raw_type_id);
inline const QuantTraits* FindQuantTraits(GgmlType type) {
  return FindQuantTraits(static_cast<uint32_t>(type));
}

// The ggml name of any raw id ("Q4_K", "IQ2_XXS"), or "unknown(<id>)".
std::string GgmlTypeName(uint32_t raw_type_id);
inline std::string GgmlTypeName(GgmlType type) { return GgmlTypeName(static_cast<uint32_t>(type)); }

// Parses "q4_k" / "Q4_K" into a type Tessera implements.
absl::StatusOr<GgmlType> ParseGgmlType(std::string_view name);

// Bytes of a row of `n_elems` elements; an error if n_elems is not a whole number of blocks.
absl::StatusOr<int64_t> RowBytes(const QuantTraits& traits, int64_t n_elems);

// Every implemented format, in id order.
const QuantTraits* const* AllQuantTraits(int* count);

}  // namespace tessera

#endif  // TESSERA_KERNELS_QUANT_TYPES_H_
