#include "model/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<int64_t> KvBlocksForBudget(const KvLayout& shape, int64_t budget_bytes) {
  if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache shape has a non-positive dimension: layers=", shape.n_layers,
        " kv_heads=", shape.n_kv_heads, " head_dim=", shape.head_dim,
        " block_tokens=", shape.block_tokens));
  }
  if (budget_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache budget is negative: ", budget_bytes));
  }
  KvLayout one = shape;
  one.n_blocks = 1;
  return budget_bytes / one.bytes();
}

KvBlockManager::KvBlockManager(int64_t n_blocks, int block_tokens)
    : n_blocks_(n_blocks), block_tokens_(block_tokens) {
  free_.reserve(static_cast<size_t>(n_blocks));
  // Pop order = ascending ids, which keeps early sequences in low, contiguous blocks.
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvBlockManager::BlocksNeeded(SeqId seq, int64_t n_tokens) const {
  const int64_t want = (n_tokens + block_tokens_ - 1) / block_tokens_;
  auto it = seqs_.find(seq);
  const int64_t have = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  return want > have ? want - have : 0;
}

absl::Status KvBlockManager::Reserve(SeqId seq, int64_t n_tokens) {
  if (n_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("negative token count ", n_tokens));
  }
  const int64_t need = BlocksNeeded(seq, n_tokens);
  if (need > free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: sequence ", seq, " needs ", need, " more blocks of ",
                     block_tokens_, " tokens, ", free_blocks(), " of ", n_blocks_, " are free"));
  }
  Seq& s = seqs_[seq];
  for (int64_t i = 0; i < need; ++i) {
    s.blocks.push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

absl::Status KvBlockManager::SetLength(SeqId seq, int64_t n_tokens) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", seq));
  const int64_t capacity = static_cast<int64_t>(it->second.blocks.size()) * block_tokens_;
  if (n_tokens < 0 || n_tokens > capacity) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", seq, ": length ", n_tokens,
                                              " outside its reserved capacity ", capacity));
  }
  it->second.n_tokens = n_tokens;
  return absl::OkStatus();
}

void KvBlockManager::Free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend(); ++b) free_.push_back(*b);
  seqs_.erase(it);
}

int64_t KvBlockManager::Length(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.n_tokens;
}

const std::vector<int32_t>& KvBlockManager::BlockTable(SeqId seq) const {
  static const std::vector<int32_t> kEmpty;
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? kEmpty : it->second.blocks;
}

}  // namespace tessera
