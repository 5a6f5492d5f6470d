#include "model/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "model/unicode.h"

namespace tessera {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁'

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// "<0x41>" -> 0x41; -1 if `text` is not of that form.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

// Appends `bytes` as valid UTF-8 to `out`: complete characters as they are,
// each maximal invalid subpart as U+FFFD. Returns how many bytes were consumed;
// the rest (a tail that more bytes could still complete) is left for later
// unless `final`, in which case it is replaced too.
size_t AppendCompleteUtf8(std::string_view bytes, bool final, std::string *out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t len = 0;
    const Utf8Scan scan = ScanUtf8(bytes.substr(pos), &len);
    if (scan == Utf8Scan::kComplete) {
      out->append(bytes.substr(pos, len));
    } else if (scan == Utf8Scan::kInvalid) {
      AppendUtf8(0xFFFD, out);
    } else if (!final) {
      break;
    } else {
      AppendUtf8(0xFFFD, out);
      len = bytes.size() - pos;
    }
    pos += len;
  }
  return pos;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerVocab vocab) {
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(std::move(vocab)));
  TESSERA_RETURN_IF_ERROR(tokenizer->Init());
  return tokenizer;
}

absl::Status Tokenizer::Init() {
  const TokenizerVocab &v = vocab_;
  const std::string &src = v.source;
  const int64_t n = static_cast<int64_t>(v.tokens.size());
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(src, ": the vocabulary is empty"));
  if (n > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", n, " tokens is too many"));
  }
  if (!v.token_types.empty() && static_cast<int64_t>(v.token_types.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": tokenizer.ggml.token_type has ",
                                                   v.token_types.size(), " entries for ", n,
                                                   " tokens"));
  }
  if (!v.scores.empty() && static_cast<int64_t>(v.scores.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": tokenizer.ggml.scores has ",
                                                   v.scores.size(), " entries for ", n, " tokens"));
  }
  for (const auto &[name, id] : {std::pair<const char *, int32_t>{"bos_token_id", v.bos_id},
                                 {"eos_token_id", v.eos_id},
                                 {"unknown_token_id", v.unk_id},
                                 {"padding_token_id", v.pad_id},
                                 {"eot_token_id", v.eot_id}}) {
    if (id < -1 || id >= n) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": tokenizer.ggml.", name, " is ", id,
                                                     ", outside the vocabulary of ", n, " tokens"));
    }
  }
  if (v.add_bos && v.bos_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": tokenizer.ggml.add_bos_token is set but there is no bos_token_id"));
  }
  if (v.add_eos && v.eos_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": tokenizer.ggml.add_eos_token is set but there is no eos_token_id"));
  }

  token_to_id_.reserve(v.tokens.size());
  for (int32_t id = 0; id < n; ++id) token_to_id_[AbslView(v.tokens[id])] = id;

  byte_symbol_ids_.fill(-1);
  byte_token_ids_.fill(-1);
  if (v.model == "gpt2") {
    TESSERA_ASSIGN_OR_RETURN(pre_tokenizer_, PreTokenizer::Create(v.pre));
    ignore_merges_ = v.pre == "llama-bpe" || v.pre == "llama3";
    // Byte-level vocabularies may lack symbols of bytes that training never saw
    // (SmolLM2 lacks 0x04, 0xF1, ...). Such a byte encodes as the unknown
    // token, or, with none, is dropped: what HF's BPE does for a character
    // outside its vocabulary.
    for (int b = 0; b < 256; ++b) {
      std::string symbol;
      AppendUtf8(ByteToGpt2CodePoint(static_cast<uint8_t>(b)), &symbol);
      byte_symbol_ids_[b] = FindToken(symbol).value_or(v.unk_id);
    }
    merges_.reserve(v.merges.size());
    for (size_t rank = 0; rank < v.merges.size(); ++rank) {
      const std::string &m = v.merges[rank];
      const size_t space = m.find(' ', 1);
      const auto bad = [&](std::string_view why) {
        return absl::InvalidArgumentError(absl::StrCat(src, ": tokenizer.ggml.merges[", rank,
                                                       "] = '", m, "' ", std::string(why)));
      };
      if (space == std::string::npos) return bad("is not two tokens separated by a space");
      const std::string_view left = std::string_view(m).substr(0, space);
      const std::string_view right = std::string_view(m).substr(space + 1);
      const std::optional<int32_t> l = FindToken(left), r = FindToken(right);
      const std::optional<int32_t> merged =
          FindToken(absl::StrCat(AbslView(left), AbslView(right)));
      if (!l || !r) return bad("names a token that is not in the vocabulary");
      if (!merged) return bad("makes a token that is not in the vocabulary");
      const uint64_t key = (static_cast<uint64_t>(*l) << 32) | static_cast<uint32_t>(*r);
      merges_.try_emplace(key, Merge{static_cast<int32_t>(rank), *merged});  // first one wins
    }
  } else if (v.model == "llama") {
    is_spm_ = true;
    bool all_bytes = true;
    for (int32_t id = 0; id < n; ++id) {
      if (token_type(id) != TokenType::kByte) continue;
      const int b = ParseByteToken(v.tokens[id]);
      if (b >= 0 && byte_token_ids_[b] < 0) byte_token_ids_[b] = id;
    }
    for (int32_t id : byte_token_ids_) all_bytes = all_bytes && id >= 0;
    if (!all_bytes && v.unk_id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(src,
                       ": SentencePiece vocabulary has neither all 256 byte tokens "
                       "<0x00>..<0xFF> nor "
                       "an unknown token, so some text could not be encoded"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": tokenizer.ggml.model is '", v.model,
                     "', which Tessera does not support (supported: gpt2, llama)"));
  }

  // Tokens matched whole in the text, longest first within each first byte.
  for (int32_t id = 0; id < n; ++id) {
    const TokenType t = token_type(id);
    if (v.tokens[id].empty()) continue;
    if (t == TokenType::kUserDefined || t == TokenType::kControl || t == TokenType::kUnknown) {
      specials_by_first_byte_[static_cast<uint8_t>(v.tokens[id][0])].push_back(
          {v.tokens[id], id, t == TokenType::kUserDefined});
    }
  }
  for (auto &list : specials_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const Special &a, const Special &b) {
      return a.text.size() > b.text.size();
    });
  }

  end_of_generation_.assign(n, false);
  for (int32_t id : {v.eos_id, v.eot_id}) {
    if (id >= 0) end_of_generation_[id] = true;
  }
  for (std::string_view text : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>",
                                "<|end|>", "<end_of_turn>", "<|end_of_text|>"}) {
    const std::optional<int32_t> id = FindToken(text);
    if (id && token_type(*id) == TokenType::kControl) end_of_generation_[*id] = true;
  }
  return absl::OkStatus();
}

TokenType Tokenizer::token_type(int32_t id) const {
  return vocab_.token_types.empty() ? TokenType::kNormal
                                    : static_cast<TokenType>(vocab_.token_types[id]);
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  const auto it = token_to_id_.find(AbslView(text));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view text) const { return FindToken(text); }

bool Tokenizer::Mergeable(int32_t id) const {
  const TokenType t = token_type(id);
  return t == TokenType::kNormal || t == TokenType::kUserDefined || t == TokenType::kUndefined;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < n_tokens() && end_of_generation_[id];
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special,
                                                       bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && vocab_.add_bos) out.push_back(vocab_.bos_id);
  // Cut at special tokens (leftmost, longest first) and encode the fragments
  // between them.
  size_t fragment_start = 0;
  bool after_special = true;
  for (size_t pos = 0; pos < text.size();) {
    const Special *match = nullptr;
    for (const Special &s : specials_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if ((s.always || parse_special) && text.substr(pos, s.text.size()) == s.text) {
        match = &s;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    if (pos > fragment_start) {
      TESSERA_RETURN_IF_ERROR(
          EncodeFragment(text.substr(fragment_start, pos - fragment_start), after_special, &out));
    }
    out.push_back(match->id);
    after_special = true;
    pos += match->text.size();
    fragment_start = pos;
  }
  if (fragment_start < text.size()) {
    TESSERA_RETURN_IF_ERROR(EncodeFragment(text.substr(fragment_start), after_special, &out));
  }
  if (add_special && vocab_.add_eos) out.push_back(vocab_.eos_id);
  return out;
}

absl::Status Tokenizer::EncodeFragment(std::string_view text, bool after_special,
                                       std::vector<int32_t> *out) const {
  if (is_spm_) {
    std::string escaped;
    escaped.reserve(text.size() + 8);
    if (vocab_.add_space_prefix && after_special) escaped.append(kSpmSpace);
    for (char c : text) {
      if (c == ' ') {
        escaped.append(kSpmSpace);
      } else {
        escaped.push_back(c);
      }
    }
    EncodeSpm(escaped, out);
    return absl::OkStatus();
  }
  std::vector<std::string_view> pieces;
  TESSERA_RETURN_IF_ERROR(pre_tokenizer_->Split(text, &pieces));
  for (std::string_view piece : pieces) EncodeBpePiece(piece, out);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::TokenBytes(int32_t id, bool render_special) const {
  if (id < 0 || id >= n_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source(), ": token id ", id, " is outside the vocabulary of ", n_tokens(), " tokens"));
  }
  const std::string &text = vocab_.tokens[id];
  switch (token_type(id)) {
    case TokenType::kControl:
    case TokenType::kUnknown:
    case TokenType::kUnused:
      return render_special ? text : std::string();
    case TokenType::kUserDefined:
      return text;
    case TokenType::kByte:
      if (const int b = ParseByteToken(text); b >= 0) return std::string(1, static_cast<char>(b));
      break;
    default:
      break;
  }
  std::string out;
  if (is_spm_) {
    for (size_t pos = 0; pos < text.size();) {
      if (text.compare(pos, kSpmSpace.size(), kSpmSpace) == 0) {
        out.push_back(' ');
        pos += kSpmSpace.size();
      } else {
        out.push_back(text[pos++]);
      }
    }
    return out;
  }
  // Byte-level BPE: each character of the token is one byte in GPT-2's
  // alphabet; a character outside the alphabet (not produced by byte-level
  // training) is kept as it is.
  for (size_t pos = 0; pos < text.size();) {
    size_t len = Utf8CharLen(text, pos);
    if (len == 0) {
      out.push_back(text[pos++]);
      continue;
    }
    const int b = Gpt2CodePointToByte(DecodeUtf8(text, pos, len));
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text, pos, len);
    }
    pos += len;
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool render_special) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    TESSERA_ASSIGN_OR_RETURN(std::string bytes, TokenBytes(id, render_special));
    if (at_start && !bytes.empty()) {
      if (vocab_.add_space_prefix && bytes[0] == ' ') bytes.erase(0, 1);  // Encode's prefix
      at_start = false;
    }
    out += bytes;
  }
  return out;
}

absl::StatusOr<std::string> Detokenizer::Next(int32_t id) {
  TESSERA_ASSIGN_OR_RETURN(std::string bytes, tokenizer_.TokenBytes(id, render_special_));
  if (at_start_ && !bytes.empty()) {
    if (tokenizer_.add_space_prefix() && bytes[0] == ' ') bytes.erase(0, 1);
    at_start_ = false;
  }
  pending_ += bytes;
  std::string out;
  pending_.erase(0, AppendCompleteUtf8(pending_, /*final=*/false, &out));
  return out;
}

std::string Detokenizer::Flush() {
  std::string out;
  AppendCompleteUtf8(pending_, /*final=*/true, &out);
  pending_.clear();
  at_start_ = true;
  return out;
}

}  // namespace tessera
