// Memory size strings: units, spacing, and errors that say what is wrong.
#include "sharding/byte_size.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

TEST(ParseByteSize, BinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("80GiB"), 80LL * 1024 * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize("24GB"), 24'000'000'000LL);
  EXPECT_EQ(*ParseByteSize("81920MiB"), 80LL * 1024 * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize("1.5TiB"), 3LL * 512 * 1024 * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize(" 16 gib "), 16LL << 30);
  EXPECT_EQ(*ParseByteSize("512B"), 512);
  EXPECT_EQ(*ParseByteSize("4k"), 4096);
  EXPECT_EQ(*ParseByteSize("2G"), 2LL << 30);
  EXPECT_EQ(*ParseByteSize("500MB"), 500'000'000LL);
  EXPECT_EQ(*ParseByteSize("0"), 0);
}

TEST(ParseByteSize, ErrorsQuoteTheTextAndSayWhy) {
  struct Case {
    const char* text;
    const char* why;
  };
  for (const Case& c :
       {Case{"", "empty"}, Case{"GiB", "does not start with a number"}, Case{"80", "no unit"},
        Case{"80XB", "unknown unit 'xb'"}, Case{"1.2.3GB", "malformed number"},
        Case{"-5GiB", "does not start with a number"}, Case{"99999999999TiB", "too large"}}) {
    absl::StatusOr<int64_t> r = ParseByteSize(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.why)) << c.text;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(std::string("'") + c.text + "'"));
  }
}

TEST(FormatBytes, PicksTheLargestBinaryUnit) {
  EXPECT_EQ(FormatBytes(17), "17 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(80LL << 30), "80.00 GiB");
  EXPECT_EQ(FormatBytes(-(3LL << 20)), "-3.00 MiB");
}

}  // namespace
}  // namespace tessera
