// Host memory in 2 MiB transparent huge pages, for the large arrays the CPU kernels stream: the
// weights the CPU backend copies and the buffer of the read-bandwidth probe.
//
// Why: streaming reads from 4 KiB pages pay a TLB miss and a page walk every 4 KiB, and in a
// virtual machine (nested paging) each walk is long. On the 2-core Xeon VM of bench/RESULTS.md
// a streaming sum got 20-24 GB/s from 4 KiB pages and 33-34 GB/s from 2 MiB pages; the matmul
// kernels gained ~10% from them. A memory limit measured on 4 KiB pages would understate what
// the machine can deliver.
//
// HugePageArena hands out 64-byte aligned pieces of large mappings (madvise(MADV_HUGEPAGE),
// 2 MiB aligned), so that many small matrices share huge pages instead of each rounding up to
// one. Where the kernel offers no transparent huge pages (THP "never") the mappings are plain
// anonymous memory, which is still correct.
//
// Thread-safety: HugePageArena::Allocate is not re-entrant; the pieces are plain memory.
#ifndef TESSERA_KERNELS_CPU_HUGE_PAGES_H_
#define TESSERA_KERNELS_CPU_HUGE_PAGES_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

inline constexpr int64_t kHugePageBytes = int64_t{2} << 20;

// Whether the kernel offers transparent huge pages to madvise(MADV_HUGEPAGE) regions
// (/sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise").
bool TransparentHugePagesAvailable();

// One anonymous mapping of at least `bytes`, 2 MiB aligned, advised as huge pages; unmapped
// when the last owner lets go.
class HugePageMapping {
 public:
  static absl::StatusOr<std::shared_ptr<HugePageMapping>> Create(int64_t bytes);
  ~HugePageMapping();
  HugePageMapping(const HugePageMapping&) = delete;
  HugePageMapping& operator=(const HugePageMapping&) = delete;

  uint8_t* data() const { return data_; }
  int64_t bytes() const { return bytes_; }

 private:
  HugePageMapping(uint8_t* data, int64_t bytes) : data_(data), bytes_(bytes) {}
  uint8_t* data_;
  int64_t bytes_;
};

// A piece of an arena's mapping; keeps the mapping alive.
struct HugePagePiece {
  uint8_t* data = nullptr;
  std::shared_ptr<HugePageMapping> mapping;
};

class HugePageArena {
 public:
  // Mappings of chunk_bytes (or the request, if larger) are carved in order.
  explicit HugePageArena(int64_t chunk_bytes = int64_t{64} << 20) : chunk_bytes_(chunk_bytes) {}
  // RESOURCE_EXHAUSTED naming the size when the memory cannot be mapped.
  absl::StatusOr<HugePagePiece> Allocate(int64_t bytes);

 private:
  int64_t chunk_bytes_;
  std::shared_ptr<HugePageMapping> current_;
  int64_t used_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_HUGE_PAGES_H_
