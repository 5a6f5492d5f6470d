// KvBlockManager: block accounting of the paged KV cache.
#include "model/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(KvBlockManager, ReservesWholeBlocksAndFreesThem) {
  KvBlockManager kv(8, 16);
  EXPECT_EQ(kv.BlocksNeeded(1, 1), 1);
  EXPECT_EQ(kv.BlocksNeeded(1, 16), 1);
  EXPECT_EQ(kv.BlocksNeeded(1, 17), 2);
  ASSERT_TRUE(kv.Reserve(1, 17).ok());
  EXPECT_EQ(kv.BlockTable(1).size(), 2u);
  EXPECT_EQ(kv.free_blocks(), 6);
  // Growing within capacity allocates nothing; beyond it, one more block.
  ASSERT_TRUE(kv.Reserve(1, 32).ok());
  EXPECT_EQ(kv.free_blocks(), 6);
  ASSERT_TRUE(kv.Reserve(1, 33).ok());
  EXPECT_EQ(kv.free_blocks(), 5);
  kv.Free(1);
  EXPECT_EQ(kv.free_blocks(), 8);
  EXPECT_FALSE(kv.Contains(1));
  EXPECT_TRUE(kv.BlockTable(1).empty());
}

TEST(KvBlockManager, SequencesNeverShareABlock) {
  KvBlockManager kv(12, 4);
  std::set<int32_t> used;
  for (SeqId s = 1; s <= 4; ++s) {
    ASSERT_TRUE(kv.Reserve(s, 3 * 4).ok());
    for (int32_t b : kv.BlockTable(s)) {
      EXPECT_GE(b, 0);
      EXPECT_LT(b, 12);
      EXPECT_TRUE(used.insert(b).second) << "block " << b << " handed out twice";
    }
  }
  EXPECT_EQ(kv.free_blocks(), 0);
}

TEST(KvBlockManager, FullCacheRefusesWithoutChangingAnything) {
  KvBlockManager kv(3, 16);
  ASSERT_TRUE(kv.Reserve(1, 40).ok());  // 3 blocks
  const absl::Status s = kv.Reserve(2, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("KV cache full"), std::string::npos) << s;
  EXPECT_FALSE(kv.Contains(2));
  EXPECT_EQ(kv.Reserve(1, 49).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.BlockTable(1).size(), 3u);
}

TEST(KvBlockManager, LengthMustStayWithinReservation) {
  KvBlockManager kv(4, 8);
  EXPECT_EQ(kv.SetLength(7, 1).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(kv.Reserve(7, 10).ok());
  EXPECT_TRUE(kv.SetLength(7, 16).ok());
  EXPECT_EQ(kv.Length(7), 16);
  EXPECT_EQ(kv.SetLength(7, 17).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(kv.SetLength(7, -1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(kv.Reserve(7, -5).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvBlocksForBudget, CountsFloat32KAndVOfEveryLayer) {
  KvLayout layout;
  layout.n_layers = 30;
  layout.n_kv_heads = 3;
  layout.head_dim = 64;
  layout.block_tokens = 16;
  // 2 (K, V) * 30 layers * 16 tokens * 3 heads * 64 dims * 4 bytes = 737280 bytes per block.
  auto n = KvBlocksForBudget(layout, 737280 * 10 + 5);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 10);
  layout.head_dim = 0;
  EXPECT_FALSE(KvBlocksForBudget(layout, 1 << 20).ok());
}

}  // namespace
}  // namespace tessera
