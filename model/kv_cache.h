// Paged KV cache: fixed-size blocks of token slots, a block table per sequence, capacity from a
// memory budget (the vLLM PagedAttention layout).
//
// Two halves:
//   KvBlockManager  - bookkeeping only: which blocks are free, which blocks each sequence owns,
//                     how many tokens it holds. The cluster scheduler owns admission and
//                     freeing through this API; it never touches K/V data.
//   KvCache         - the storage of one engine (one shard: its layers and its KV heads), in
//                     host memory for the CPU backend: per layer, K and V of shape
//                     (n_blocks, block_tokens, n_kv_heads, head_dim), float32.
//
// Thread-safety: none; both are owned by one engine / scheduler thread.
#ifndef TESSERA_MODEL_KV_CACHE_H_
#define TESSERA_MODEL_KV_CACHE_H_

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

using SeqId = uint64_t;

struct KvCacheShape {
  int n_layers = 0;      // layers this shard owns
  int n_kv_heads = 0;    // KV heads this shard owns
  int head_dim = 0;
  int block_tokens = 16; // token slots per block

  // Bytes of K and V for one block across all owned layers (float32 storage).
  int64_t block_bytes() const {
    return int64_t{2} * n_layers * block_tokens * n_kv_heads * head_dim * int64_t{sizeof(float)};
  }
};

// How many blocks fit in `budget_bytes` (at least 0); an error if the shape is invalid.
absl::StatusOr<int64_t> KvBlocksForBudget(const KvCacheShape& shape, int64_t budget_bytes);

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

// K/V storage for one engine shard, on the host.
class KvCache {
 public:
  // Allocates n_blocks blocks of `shape`; an error if the allocation size overflows.
  static absl::StatusOr<KvCache> Create(const KvCacheShape& shape, int64_t n_blocks);

  const KvCacheShape& shape() const { return shape_; }
  int64_t n_blocks() const { return n_blocks_; }

  // Pointer to the K (or V) vector of token slot `slot` (0..block_tokens-1) of `block`, for
  // `layer` (0-based among the owned layers): n_kv_heads * head_dim floats.
  float* K(int layer, int64_t block, int slot) { return At(layer, 0, block, slot); }
  float* V(int layer, int64_t block, int slot) { return At(layer, 1, block, slot); }
  const float* K(int layer, int64_t block, int slot) const {
    return const_cast<KvCache*>(this)->At(layer, 0, block, slot);
  }
  const float* V(int layer, int64_t block, int slot) const {
    return const_cast<KvCache*>(this)->At(layer, 1, block, slot);
  }

 private:
  KvCache(const KvCacheShape& shape, int64_t n_blocks, std::vector<float> data)
      : shape_(shape), n_blocks_(n_blocks), data_(std::move(data)) {}
  float* At(int layer, int kv, int64_t block, int slot) {
    const int64_t token_floats = int64_t{shape_.n_kv_heads} * shape_.head_dim;
    const int64_t per_kv = n_blocks_ * shape_.block_tokens * token_floats;
    return data_.data() + (int64_t{layer} * 2 + kv) * per_kv +
           (block * shape_.block_tokens + slot) * token_floats;
  }

  KvCacheShape shape_;
  int64_t n_blocks_ = 0;
  std::vector<float> data_;  // (n_layers, 2, n_blocks, block_tokens, n_kv_heads, head_dim)
};

}  // namespace tessera

#endif  // TESSERA_MODEL_KV_CACHE_H_
