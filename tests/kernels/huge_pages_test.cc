// The huge-page memory of kernels/cpu/huge_pages.h: mappings aligned to 2 MiB, zeroed and
// writable; arena pieces aligned, disjoint and kept alive by their owners; the kernel really
// backs a touched mapping with huge pages where it offers them (read back from
// /proc/self/smaps, the kernel's own account); and the CPU backend's switch for its copies.
#include "kernels/cpu/huge_pages.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

TEST(HugePageMappingTest, IsAlignedZeroedAndWritable) {
  auto m = HugePageMapping::Create(3 * (int64_t{1} << 20));
  ASSERT_TRUE(m.ok()) << m.status();
  const auto* p = (*m)->data();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kHugePageBytes, 0u);
  EXPECT_EQ((*m)->bytes(), 2 * kHugePageBytes);  // whole huge pages
  std::vector<uint8_t> zeros(static_cast<size_t>((*m)->bytes()), 0);
  EXPECT_EQ(std::memcmp(p, zeros.data(), zeros.size()), 0);
  std::memset((*m)->data(), 0x5A, static_cast<size_t>((*m)->bytes()));
  EXPECT_EQ((*m)->data()[(*m)->bytes() - 1], 0x5A);
}

TEST(HugePageMappingTest, BadSizesAreErrorsNamingTheSize) {
  EXPECT_EQ(HugePageMapping::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  const auto huge = HugePageMapping::Create(int64_t{1} << 60);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(huge.status().message().find("1152921504606846976 bytes"), std::string::npos)
      << huge.status();
  EXPECT_EQ(HugePageMapping::Create(INT64_MAX).status().code(),
            absl::StatusCode::kResourceExhausted);
  HugePageArena arena;
  EXPECT_EQ(arena.Allocate(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HugePageArenaTest, PiecesAreAlignedDisjointAndOutliveTheArena) {
  HugePagePiece kept;
  {
    HugePageArena arena(kHugePageBytes);  // small chunks: the test crosses them
    std::vector<HugePagePiece> pieces;
    const int64_t sizes[] = {1, 100, 4096, 700000, 1, 3 * kHugePageBytes, 64, 1500000};
    for (int64_t n : sizes) {
      auto piece = arena.Allocate(n);
      ASSERT_TRUE(piece.ok()) << piece.status();
      EXPECT_EQ(reinterpret_cast<uintptr_t>(piece->data) % 64, 0u);
      // Inside its mapping.
      EXPECT_GE(piece->data, piece->mapping->data());
      EXPECT_LE(piece->data + n, piece->mapping->data() + piece->mapping->bytes());
      std::memset(piece->data, static_cast<int>(pieces.size() + 1), static_cast<size_t>(n));
      pieces.push_back(*piece);
    }
    // Every piece still holds its own fill: no two overlap.
    for (size_t i = 0; i < pieces.size(); ++i) {
      for (int64_t b : {int64_t{0}, sizes[i] - 1}) {
        EXPECT_EQ(pieces[i].data[b], static_cast<uint8_t>(i + 1)) << i;
      }
    }
    kept = pieces[3];
  }
  EXPECT_EQ(kept.data[699999], 4);  // the arena is gone, the piece's mapping is not
}

// AnonHugePages (kB) of the mapping that contains p, from /proc/self/smaps.
int64_t AnonHugeKb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= addr && addr < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      return std::strtoll(line.c_str() + 14, nullptr, 10);
    }
  }
  return -1;
}

TEST(HugePageMappingTest, TouchedMemoryIsBackedByHugePagesWhereTheKernelOffersThem) {
  if (!TransparentHugePagesAvailable()) GTEST_SKIP() << "transparent huge pages are off here";
  auto m = HugePageMapping::Create(4 * kHugePageBytes);
  ASSERT_TRUE(m.ok()) << m.status();
  std::memset((*m)->data(), 1, static_cast<size_t>((*m)->bytes()));
  // At least one of the four: the kernel may fall back to small pages under fragmentation.
  EXPECT_GE(AnonHugeKb((*m)->data()), 2048);
}

TEST(HugePageBackendTest, EnvironmentKeepsWeightsThatAreNotInterleavedInTheMmap) {
  // Q8_0 is never interleaved: with huge pages it is copied, with TESSERA_CPU_HUGE_PAGES=0
  // it is not; the products are the same bits either way.
  const int64_t rows = 8, cols = 64;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 13) - 6.0f;
  const QuantTraits& q8 = *FindQuantTraits(GgmlType::kQ8_0);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols / 32 * q8.block_bytes));
  q8.quantize_ref(w.data(), bytes.data(), rows * cols);
  const QuantMatrix host{GgmlType::kQ8_0, rows, cols, cols / 32 * q8.block_bytes, bytes.data()};
  std::vector<float> x(static_cast<size_t>(cols), 0.25f), y_copy(rows), y_mmap(rows);

  CpuBackend copying(1);
  auto copied = copying.LoadWeight(host);
  ASSERT_TRUE(copied.ok()) << copied.status();
  ASSERT_EQ(setenv("TESSERA_CPU_HUGE_PAGES", "0", 1), 0);
  CpuBackend in_place(1);
  unsetenv("TESSERA_CPU_HUGE_PAGES");
  auto mapped = in_place.LoadWeight(host);
  ASSERT_TRUE(mapped.ok()) << mapped.status();

  EXPECT_EQ((*mapped)->matrix().data, bytes.data());
  EXPECT_EQ((*mapped)->device_bytes(), 0);
  if (TransparentHugePagesAvailable()) {
    EXPECT_NE((*copied)->matrix().data, bytes.data());
    EXPECT_EQ((*copied)->device_bytes(), static_cast<int64_t>(bytes.size()));
    EXPECT_NE(copying.name().find("2 MiB pages"), std::string::npos) << copying.name();
  }
  EXPECT_EQ(in_place.name().find("2 MiB pages"), std::string::npos) << in_place.name();
  ASSERT_TRUE(copying.MatMul(**copied, x.data(), 1, y_copy.data()).ok());
  ASSERT_TRUE(in_place.MatMul(**mapped, x.data(), 1, y_mmap.data()).ok());
  EXPECT_EQ(y_copy, y_mmap);
}

}  // namespace
}  // namespace tessera
