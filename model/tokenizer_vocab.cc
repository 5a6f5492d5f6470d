// TokenizerVocabFromGguf: the tokenizer.ggml.* metadata keys as a TokenizerVocab.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace tessera {
namespace {

// An optional key: `fallback` when absent; a present key of the wrong type is an error.
template <typename T, typename Getter>
absl::StatusOr<T> Optional(const GgufFile& f, std::string_view key, T fallback, Getter get) {
  if (!f.Has(key)) return fallback;
  return (f.*get)(key);
}

absl::StatusOr<int32_t> OptionalId(const GgufFile& f, std::string_view key) {
  if (!f.Has(key)) return -1;
  TESSERA_ASSIGN_OR_RETURN(const uint32_t id, f.GetU32(key));
  if (id > static_cast<uint32_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": metadata key '", std::string(key), "' is ", id, ", too large"));
  }
  return static_cast<int32_t>(id);
}

}  // namespace

absl::StatusOr<TokenizerVocab> TokenizerVocabFromGguf(const GgufFile& f) {
  TokenizerVocab v;
  v.source = f.path();
  TESSERA_ASSIGN_OR_RETURN(const std::string_view model, f.GetString("tokenizer.ggml.model"));
  v.model = std::string(model);
  TESSERA_ASSIGN_OR_RETURN(const std::string_view pre,
                           f.GetStringOr("tokenizer.ggml.pre", std::string_view()));
  v.pre = std::string(pre);

  TESSERA_ASSIGN_OR_RETURN(const std::vector<std::string_view> tokens,
                           f.GetStringArray("tokenizer.ggml.tokens"));
  v.tokens.assign(tokens.begin(), tokens.end());
  const size_t n = v.tokens.size();

  if (f.Has("tokenizer.ggml.token_type")) {
    TESSERA_ASSIGN_OR_RETURN(const std::vector<int64_t> types,
                             f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tokenizer.ggml.token_type has ",
                                                     types.size(), " entries for ", n, " tokens"));
    }
    v.token_types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 0 || types[i] > static_cast<int64_t>(TokenType::kByte)) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.path(), ": tokenizer.ggml.token_type[", i, "] is ", types[i],
                         "; expected 0..6 (undefined, normal, unknown, control, user-defined, "
                         "unused, byte)"));
      }
      v.token_types.push_back(static_cast<int32_t>(types[i]));
    }
  }
  if (f.Has("tokenizer.ggml.scores")) {
    TESSERA_ASSIGN_OR_RETURN(v.scores, f.GetF32Array("tokenizer.ggml.scores"));
    if (v.scores.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tokenizer.ggml.scores has ",
                                                     v.scores.size(), " entries for ", n,
                                                     " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan(v.scores[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.path(), ": tokenizer.ggml.scores[", i, "] is NaN"));
      }
    }
  }
  if (v.model == "gpt2" && !f.Has("tokenizer.ggml.merges")) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.path(), ": tokenizer.ggml.model is gpt2 but tokenizer.ggml.merges is missing"));
  }
  if (f.Has("tokenizer.ggml.merges")) {
    TESSERA_ASSIGN_OR_RETURN(const std::vector<std::string_view> merges,
                             f.GetStringArray("tokenizer.ggml.merges"));
    v.merges.assign(merges.begin(), merges.end());
  }

  TESSERA_ASSIGN_OR_RETURN(v.bos_id, OptionalId(f, "tokenizer.ggml.bos_token_id"));
  TESSERA_ASSIGN_OR_RETURN(v.eos_id, OptionalId(f, "tokenizer.ggml.eos_token_id"));
  TESSERA_ASSIGN_OR_RETURN(v.unk_id, OptionalId(f, "tokenizer.ggml.unknown_token_id"));
  TESSERA_ASSIGN_OR_RETURN(v.pad_id, OptionalId(f, "tokenizer.ggml.padding_token_id"));
  TESSERA_ASSIGN_OR_RETURN(v.eot_id, OptionalId(f, "tokenizer.ggml.eot_token_id"));

  const bool spm = v.model == "llama";
  TESSERA_ASSIGN_OR_RETURN(v.add_bos,
                           Optional(f, "tokenizer.ggml.add_bos_token", spm, &GgufFile::GetBool));
  TESSERA_ASSIGN_OR_RETURN(v.add_eos,
                           Optional(f, "tokenizer.ggml.add_eos_token", false, &GgufFile::GetBool));
  TESSERA_ASSIGN_OR_RETURN(v.add_space_prefix,
                           Optional(f, "tokenizer.ggml.add_space_prefix", spm, &GgufFile::GetBool));
  return v;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  TESSERA_ASSIGN_OR_RETURN(TokenizerVocab vocab, TokenizerVocabFromGguf(file));
  return Create(std::move(vocab));
}

}  // namespace tessera
