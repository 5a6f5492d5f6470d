// Byte-level BPE over one pre-tokenized piece (Tokenizer::EncodeBpePiece).
//
// The piece's bytes start as one symbol each (their GPT-2 alphabet tokens). A min-heap holds
// candidate merges of adjacent symbols keyed by (merge rank, left position); popping the best
// one and merging it in a doubly linked list costs O(log n), so a piece of n bytes takes
// O(n log n) whatever its shape. Heap entries made stale by an earlier merge are recognised
// (either side changed or is gone) and skipped, which is what makes lazy deletion correct.
#include <queue>
#include <vector>

#include "model/tokenizer.h"
#include "model/unicode.h"

namespace tessera {
namespace {

struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev;
  int32_t next;
};

struct Candidate {
  int32_t rank;
  int32_t left;  // symbol index; symbols never move, so this is also the text position order
  int32_t right;
  int32_t left_id;
  int32_t right_id;
  int32_t result;
  // std::priority_queue is a max-heap: "less" means "worse" (higher rank, then further right).
  bool operator<(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

}  // namespace

void Tokenizer::EncodeBpePiece(std::string_view piece, std::vector<int32_t>* out) const {
  if (ignore_merges_ && piece.size() > 1) {
    if (const std::optional<int32_t> id = FindToken(BytesToGpt2(piece))) {
      out->push_back(*id);
      return;
    }
  }
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) {
    const int32_t id = byte_symbol_ids_[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // no symbol and no unknown token: dropped (see Tokenizer::Init)
    const int32_t i = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, i - 1, i + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const int32_t n = static_cast<int32_t>(symbols.size());
  std::priority_queue<Candidate> heap;
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t l = symbols[left].id, r = symbols[right].id;
    const auto it = merges_.find((static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r));
    if (it != merges_.end()) heap.push({it->second.rank, left, right, l, r, it->second.result});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    if (left.id != c.left_id || left.next != c.right || symbols[c.right].id != c.right_id) {
      continue;  // stale
    }
    Symbol& right = symbols[c.right];
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -1;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

}  // namespace tessera
