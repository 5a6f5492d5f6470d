// Memory sizes as people write them: "80GiB", "24GB", "81920MiB", "1.5TiB", "512B".
// Binary units (KiB, MiB, GiB, TiB: powers of 1024) and decimal ones (kB/KB, MB, GB, TB:
// powers of 1000) are both accepted, case-insensitively, with optional space before the unit
// and the binary short forms "K", "M", "G", "T" (taken as KiB...TiB). A number needs a unit
// ("80" alone is refused as ambiguous), except "0"; "512B" is bytes.
#ifndef TESSERA_SHARDING_BYTE_SIZE_H_
#define TESSERA_SHARDING_BYTE_SIZE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera {

// Bytes of a size string, rounded down to a whole byte; an error quoting the text and saying
// what is wrong (no number, unknown unit, negative, too large). "0" is 0.
absl::StatusOr<int64_t> ParseByteSize(std::string_view text);

// "4.58 GiB", "312.00 MiB", "17 B": binary units, two decimals.
std::string FormatBytes(int64_t bytes);

}  // namespace tessera

#endif  // TESSERA_SHARDING_BYTE_SIZE_H_
