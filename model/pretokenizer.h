// PreTokenizer: splits text into the pieces that byte-level BPE then encodes one by one, the
// way the Hugging Face pre-tokenizer of each `tokenizer.ggml.pre` family does.
//
// A pre-tokenizer is a list of regex stages (PCRE2, UTF + Unicode properties). Each stage splits
// every piece of the previous stage into its matches and the text between them ("isolated"
// splitting): no byte is dropped, and a later stage never sees across an earlier boundary.
// Bytes that are not well-formed UTF-8 each become a piece of their own, untouched by the
// regexes (they are then encoded as their byte-level symbols).
//
// Thread-safety: immutable after Create(); Split() may be called concurrently.
#ifndef TESSERA_MODEL_PRETOKENIZER_H_
#define TESSERA_MODEL_PRETOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

class PreTokenizer {
 public:
  // `pre` is the value of tokenizer.ggml.pre. Known families:
  //   "gpt2", "default" (and ""): GPT-2's regex, as in HF's ByteLevel(use_regex=true);
  //   "smollm", "starcoder": every \p{N} on its own (HF Digits(individual_digits=true)), then
  //                          GPT-2's regex;
  //   "llama-bpe", "llama3": Llama 3's (tiktoken cl100k-style) regex.
  // Anything else is an InvalidArgument error that names it and lists these.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view pre);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` (views into it, in order, together covering it exactly) to
  // `pieces`. Fails only if PCRE2 reports a resource limit.
  absl::Status Split(std::string_view text, std::vector<std::string_view>* pieces) const;

  const std::string& name() const { return name_; }

 private:
  struct Stage;
  PreTokenizer() = default;
  std::string name_;
  std::vector<std::unique_ptr<Stage>> stages_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_PRETOKENIZER_H_
