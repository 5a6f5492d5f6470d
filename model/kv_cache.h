// Paged KV cache: fixed-size blocks of token slots, a block table per sequence, capacity from a
// memory budget (the vLLM PagedAttention layout).
//
// This is the bookkeeping half: which blocks are free, which blocks each sequence owns, how
// many tokens it holds. The cluster scheduler owns admission and freeing through this API. The
// K/V data itself lives in the backend's memory (Backend::AllocateKvCache), addressed by the
// block ids handed out here.
//
// Thread-safety: none; both are owned by one engine / scheduler thread.
#ifndef TESSERA_MODEL_KV_CACHE_H_
#define TESSERA_MODEL_KV_CACHE_H_

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace tessera {

using SeqId = uint64_t;

// How many blocks of `layout` (its n_blocks ignored) fit in `budget_bytes`; an error if the
// layout has a non-positive dimension.
absl::StatusOr<int64_t> KvBlocksForBudget(const KvLayout& layout, int64_t budget_bytes);

class KvBlockManager {
 public:
  KvBlockManager(int64_t n_blocks, int block_tokens);
  KvBlockManager(const KvBlockManager&) = delete;
  KvBlockManager& operator=(const KvBlockManager&) = delete;

  int64_t n_blocks() const { return n_blocks_; }
  int block_tokens() const { return block_tokens_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return n_blocks_ - free_blocks(); }

  // Blocks needed to grow `seq` (new or existing) to `n_tokens` tokens in total.
  int64_t BlocksNeeded(SeqId seq, int64_t n_tokens) const;

  // Makes room for `seq` to hold `n_tokens` tokens in total, allocating blocks as needed
  // (creating the sequence if new). RESOURCE_EXHAUSTED, changing nothing, if too few are free.
  absl::Status Reserve(SeqId seq, int64_t n_tokens);

  // Records that `seq` now holds n_tokens tokens (<= reserved capacity).
  absl::Status SetLength(SeqId seq, int64_t n_tokens);

  // Returns all blocks of `seq` to the free list; unknown ids are a no-op.
  void Free(SeqId seq);

  bool Contains(SeqId seq) const { return seqs_.count(seq) != 0; }
  int64_t Length(SeqId seq) const;  // tokens held; 0 for unknown
  // The sequence's block table: block ids in token order (empty for unknown).
  const std::vector<int32_t>& BlockTable(SeqId seq) const;

 private:
  struct Seq {
    std::vector<int32_t> blocks;
    int64_t n_tokens = 0;
  };
  const int64_t n_blocks_;
  const int block_tokens_;
  std::vector<int32_t> free_;  // stack of free block ids
  std::unordered_map<SeqId, Seq> seqs_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_KV_CACHE_H_
