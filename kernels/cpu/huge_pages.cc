#include "kernels/cpu/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera {

bool TransparentHugePagesAvailable() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(f, modes);
  return modes.find("[always]") != std::string::npos ||
         modes.find("[madvise]") != std::string::npos;
}

absl::StatusOr<std::shared_ptr<HugePageMapping>> HugePageMapping::Create(int64_t bytes) {
  if (bytes <= 0) return absl::InvalidArgumentError("huge-page mapping of no bytes");
  if (bytes > (int64_t{1} << 62)) {  // no machine has it, and the rounding below would overflow
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory: cannot map ", bytes, " bytes"));
  }
  const int64_t size = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  // Map one huge page more than needed and trim both ends to a 2 MiB aligned range: mmap only
  // promises 4 KiB alignment, and a huge page needs its 2 MiB aligned virtual range.
  const size_t span = static_cast<size_t>(size + kHugePageBytes);
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory: cannot map ", bytes, " bytes: ", std::strerror(errno)));
  }
  auto* base = static_cast<uint8_t*>(raw);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(base);
  const auto align = static_cast<uintptr_t>(kHugePageBytes);
  const uintptr_t aligned = (addr + align - 1) & ~(align - 1);
  auto* data = reinterpret_cast<uint8_t*>(aligned);
  if (data > base) munmap(base, static_cast<size_t>(data - base));
  uint8_t* end = data + size;
  if (base + span > end) munmap(end, static_cast<size_t>(base + span - end));
  // Advice only: where THP is off the range stays in 4 KiB pages, which is still correct.
  madvise(data, static_cast<size_t>(size), MADV_HUGEPAGE);
  return std::shared_ptr<HugePageMapping>(new HugePageMapping(data, size));
}

HugePageMapping::~HugePageMapping() { munmap(data_, static_cast<size_t>(bytes_)); }

absl::StatusOr<HugePagePiece> HugePageArena::Allocate(int64_t bytes) {
  if (bytes <= 0) return absl::InvalidArgumentError("huge-page allocation of no bytes");
  const int64_t rounded = (bytes + 63) / 64 * 64;
  if (current_ == nullptr || used_ + rounded > current_->bytes()) {
    absl::StatusOr<std::shared_ptr<HugePageMapping>> m =
        HugePageMapping::Create(std::max(chunk_bytes_, rounded));
    if (!m.ok()) return m.status();
    current_ = *std::move(m);
    used_ = 0;
  }
  HugePagePiece piece{current_->data() + used_, current_};
  used_ += rounded;
  return piece;
}

}  // namespace tessera
