// Tokenizer: text <-> token ids for the vocabularies GGUF files carry, and Detokenizer, which
// turns a stream of ids into text without ever cutting a UTF-8 character in half.
//
// Two models, picked by tokenizer.ggml.model:
//   "gpt2":  byte-level BPE. The text is split by the pre-tokenizer of tokenizer.ggml.pre
//            (model/pretokenizer.h); each piece's bytes are spelled in GPT-2's printable byte
//            alphabet (model/unicode.h) and merged pairwise, always applying the lowest-ranked
//            applicable merge (rank = position in tokenizer.ggml.merges), leftmost first among
//            equal ranks. Llama 3 ("llama-bpe"/"llama3") first takes a piece that is itself a
//            token whole (HF's BPE ignore_merges).
//   "llama": SentencePiece-style BPE over scores. Spaces become U+2581 ('▁'), a '▁' is
//            prepended to every text fragment when add_space_prefix is set (HF's Prepend
//            normalizer: at the start and after each special token), and adjacent symbols are
//            merged while their concatenation is a token, highest score first, leftmost first
//            among equal scores. A character that is no token becomes its byte tokens <0xNN>
//            (byte fallback), or the unknown token if the vocabulary has none.
//
// Special tokens: before either model runs, the text is cut at tokens matched whole, leftmost
// and longest first: user-defined tokens (type 4) always, unknown/control tokens (types 2, 3,
// e.g. "<|im_start|>") only when the caller asks (parse_special, as for a rendered chat
// template; never for untrusted text that should stay text).
//
// Complexity: O(n log n) in the piece length (priority queue over a linked list of symbols),
// so 100 KB without a space is fine.
//
// Thread-safety: a Tokenizer is immutable after Create(); all const methods may be called
// concurrently. A Detokenizer is one stream's state: one thread at a time.
#ifndef TESSERA_MODEL_TOKENIZER_H_
#define TESSERA_MODEL_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/pretokenizer.h"

namespace tessera {

class GgufFile;

// tokenizer.ggml.token_type values (as in llama.cpp's GGUF writer and gguf-py's TokenType).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a Tokenizer is built from: the tokenizer.ggml.* metadata as plain data.
struct TokenizerVocab {
  std::string source = "vocab";  // where it came from (a GGUF path), for error messages
  std::string model;             // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;               // tokenizer.ggml.pre ("" if absent)
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // TokenType per token; empty means all normal
  std::vector<float> scores;         // per token ("llama"); empty means all 0
  std::vector<std::string> merges;   // "left right", highest priority first ("gpt2")
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1;  // -1: none
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;
};

// Reads the tokenizer.ggml.* keys. Defaults when a key is absent: add_bos_token and
// add_space_prefix are true for "llama" and false for "gpt2"; add_eos_token false; ids -1.
// Errors name the file, key and value (missing tokens/model, merges for gpt2, wrong types,
// arrays whose length differs from the token count).
absl::StatusOr<TokenizerVocab> TokenizerVocabFromGguf(const GgufFile& file);

class Tokenizer {
 public:
  // Validates the vocabulary (ids in range, merges made of tokens, llama has byte tokens or an
  // unknown token, known pre-tokenizer). A gpt2 vocabulary may lack some bytes' symbols: those
  // bytes encode as the unknown token, or are dropped if there is none (as HF's BPE does).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerVocab vocab);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids. `add_special`: BOS first / EOS last as the metadata says (add_bos/add_eos).
  // `parse_special`: match control tokens written in the text (see the file comment). Any byte
  // string is accepted (bytes that are not UTF-8 are encoded as bytes); fails only on a PCRE2
  // resource limit.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special,
                                              bool parse_special) const;

  // Ids -> bytes (not necessarily valid UTF-8 for an arbitrary id sequence). Control and
  // unknown tokens give their text if `render_special`, nothing otherwise; with
  // add_space_prefix, the space that encoding prepended is removed from the start. Fails on an
  // id outside [0, n_tokens()).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool render_special) const;

  // The bytes one token stands for (no start-of-text space removal); same rules as Decode.
  absl::StatusOr<std::string> TokenBytes(int32_t id, bool render_special) const;

  int32_t n_tokens() const { return static_cast<int32_t>(vocab_.tokens.size()); }
  const std::string& token_text(int32_t id) const { return vocab_.tokens[id]; }  // id in range
  TokenType token_type(int32_t id) const;                                        // id in range
  std::optional<int32_t> TokenId(std::string_view text) const;                   // exact token text
  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  bool add_bos() const { return vocab_.add_bos; }
  bool add_space_prefix() const { return vocab_.add_space_prefix; }
  const std::string& model() const { return vocab_.model; }
  const std::string& source() const { return vocab_.source; }

  // Whether generation should stop at `id`: EOS, EOT, or a control token that ends a turn in
  // the chat formats we know ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", ...).
  bool IsEndOfGeneration(int32_t id) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct Special {
    std::string_view text;
    int32_t id;
    bool always;  // user-defined: matched even without parse_special
  };

  explicit Tokenizer(TokenizerVocab vocab) : vocab_(std::move(vocab)) {}
  absl::Status Init();
  bool IsSpm() const { return is_spm_; }
  // Appends the ids of one special-free text fragment. `after_special`: the fragment starts the
  // text or follows a special token (where SentencePiece's space prefix goes).
  absl::Status EncodeFragment(std::string_view text, bool after_special,
                              std::vector<int32_t>* out) const;
  void EncodeBpePiece(std::string_view piece, std::vector<int32_t>* out) const;  // bpe.cc
  void EncodeSpm(std::string_view text, std::vector<int32_t>* out) const;        // spm.cc
  std::optional<int32_t> FindToken(std::string_view text) const;
  bool Mergeable(int32_t id) const;  // SentencePiece merges only form normal/user tokens

  TokenizerVocab vocab_;
  bool is_spm_ = false;
  bool ignore_merges_ = false;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // gpt2
  std::array<int32_t, 256> byte_symbol_ids_{};   // gpt2: id of each byte's symbol
  absl::flat_hash_map<uint64_t, Merge> merges_;  // gpt2: (left << 32 | right) -> merge
  std::array<int32_t, 256> byte_token_ids_{};    // llama: id of <0xNN>, or -1
  std::array<std::vector<Special>, 256> specials_by_first_byte_;  // longest first
  std::vector<bool> end_of_generation_;
};

// Incremental detokenization for streaming: feed ids one at a time, get back only text made of
// complete UTF-8 characters. Bytes that can never become a character (an invalid sequence)
// come out as U+FFFD, one per maximal invalid subpart, so the output is always valid UTF-8;
// bytes that may still be completed by later tokens are held back.
// Invariant: the concatenation of everything Next() and Flush() return equals
// Decode(all ids) when that is valid UTF-8.
class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tokenizer, bool render_special = false)
      : tokenizer_(tokenizer), render_special_(render_special) {}

  // The newly completed text (possibly empty). Fails on an out-of-range id.
  absl::StatusOr<std::string> Next(int32_t id);
  // Ends the stream: held-back bytes become U+FFFD. The Detokenizer may then be reused.
  std::string Flush();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  bool at_start_ = true;  // nothing produced yet (SentencePiece's leading space is dropped)
  std::string pending_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_TOKENIZER_H_
