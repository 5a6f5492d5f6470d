// SentencePiece-style BPE over scores (Tokenizer::EncodeSpm), for tokenizer.ggml.model "llama".
//
// The (already '▁'-escaped) text starts as one symbol per UTF-8 character (a byte that is not
// UTF-8 is a symbol of its own). Adjacent symbols whose concatenation is a normal or
// user-defined token are candidates; a max-heap keyed by (token score, then leftmost) picks the
// next merge, in O(log n) each, with stale entries skipped as in bpe.cc. Each final symbol is
// its token, or else its bytes as <0xNN> tokens (byte fallback), or else the unknown token.
#include <queue>
#include <vector>

#include "model/tokenizer.h"
#include "model/unicode.h"

namespace tessera {
namespace {

struct Symbol {
  uint32_t start;  // byte offset in the text
  uint32_t len;    // 0 once merged into its left neighbour
  int32_t prev;
  int32_t next;
};

struct Candidate {
  float score;
  int32_t left;
  int32_t right;
  uint32_t left_len;
  uint32_t right_len;
  // Max-heap: "less" means worse (lower score, then further right).
  bool operator<(const Candidate& o) const {
    return score != o.score ? score < o.score : left > o.left;
  }
};

}  // namespace

void Tokenizer::EncodeSpm(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = std::max<size_t>(1, Utf8CharLen(text, pos));
    const int32_t i = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), i - 1, i + 1});
    pos += len;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate> heap;
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const std::optional<int32_t> id = FindToken(text.substr(l.start, l.len + r.len));
    if (!id || !Mergeable(*id)) return;
    const float score = vocab_.scores.empty() ? 0.0f : vocab_.scores[*id];
    heap.push({score, left, right, l.len, r.len});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.len != c.left_len || left.next != c.right || right.len != c.right_len) continue;
    left.len += right.len;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.len = 0;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].start, symbols[i].len);
    if (const std::optional<int32_t> id = FindToken(piece)) {
      out->push_back(*id);
      continue;
    }
    for (char c : piece) {
      const int32_t byte_id = byte_token_ids_[static_cast<uint8_t>(c)];
      out->push_back(byte_id >= 0 ? byte_id : vocab_.unk_id);
    }
  }
}

}  // namespace tessera
