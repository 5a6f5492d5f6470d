#include "sharding/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tessera {
namespace {

struct Unit {
  const char* name;  // lower case
  double bytes;
};

constexpr double kKi = 1024.0;
constexpr Unit kUnits[] = {
    {"", 1.0},
    {"b", 1.0},
    {"k", kKi},
    {"kib", kKi},
    {"kb", 1e3},
    {"m", kKi* kKi},
    {"mib", kKi* kKi},
    {"mb", 1e6},
    {"g", kKi* kKi* kKi},
    {"gib", kKi* kKi* kKi},
    {"gb", 1e9},
    {"t", kKi* kKi* kKi* kKi},
    {"tib", kKi* kKi* kKi* kKi},
    {"tb", 1e12},
};

}  // namespace

absl::StatusOr<int64_t> ParseByteSize(std::string_view text) {
  const std::string s(absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size())));
  auto error = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory size '", std::string(text), "': ", why,
                     " (write a number and a unit, e.g. 80GiB, 24GB, 81920MiB)"));
  };
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return error(s.empty() ? "empty" : "does not start with a number");
  const std::string number = s.substr(0, i);
  if (number.find('.') != number.rfind('.') || number == ".") return error("malformed number");
  const double value = std::strtod(number.c_str(), nullptr);
  std::string unit = absl::AsciiStrToLower(
      std::string(absl::StripAsciiWhitespace(absl::string_view(s).substr(i))));
  if (unit.empty() && value != 0.0) {
    return error("has no unit (a bare number is ambiguous: bytes? GiB?)");
  }
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    const double bytes = std::floor(value * u.bytes);
    if (!(bytes < 9.0e18)) return error("too large");
    return static_cast<int64_t>(bytes);
  }
  return error(
      absl::StrCat("unknown unit '", unit, "' (known: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"));
}

std::string FormatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  const double a = std::fabs(b);
  if (a >= kKi * kKi * kKi * kKi) return absl::StrFormat("%.2f TiB", b / (kKi * kKi * kKi * kKi));
  if (a >= kKi * kKi * kKi) return absl::StrFormat("%.2f GiB", b / (kKi * kKi * kKi));
  if (a >= kKi * kKi) return absl::StrFormat("%.2f MiB", b / (kKi * kKi));
  if (a >= kKi) return absl::StrFormat("%.2f KiB", b / kKi);
  return absl::StrCat(bytes, " B");
}

}  // namespace tessera
