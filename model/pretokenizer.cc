#include "model/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "model/unicode.h"

namespace tessera {
namespace {

// Whitespace as HF tokenizers' regex engine (Oniguruma) defines \s in Unicode mode: TAB..CR,
// U+0085 and the Z categories. PCRE2's \s lacks U+0085, so the patterns spell the class out:
// "WS" below is replaced by this inside a character class.
constexpr std::string_view kWhitespace = "\\t-\\r\\x{85}\\p{Z}";

// GPT-2's pattern (HF ByteLevel pre-tokenizer with use_regex=true).
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^WS\\p{L}\\p{N}]+|[WS]+(?![^WS])|[WS]+";

// Llama 3's pattern (its tokenizer.json Split pre-tokenizer, behaviour Isolated).
constexpr std::string_view kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^WS\\p{L}\\p{N}]+[\\r\\n]*|[WS]*[\\r\\n]+|[WS]+(?![^WS])|[WS]+";

// Each numeric character alone (HF Digits(individual_digits=true) splits on char::is_numeric,
// i.e. the N categories).
constexpr std::string_view kDigitPattern = "\\p{N}";

}  // namespace

struct PreTokenizer::Stage {
  pcre2_code* code = nullptr;
  ~Stage() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view pre) {
  std::vector<std::string_view> patterns;
  if (pre.empty() || pre == "default" || pre == "gpt2") {
    patterns = {kGpt2Pattern};
  } else if (pre == "smollm" || pre == "starcoder") {
    patterns = {kDigitPattern, kGpt2Pattern};
  } else if (pre == "llama-bpe" || pre == "llama3") {
    patterns = {kLlama3Pattern};
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.ggml.pre is '", std::string(pre),
        "', a pre-tokenizer Tessera does not know (supported: gpt2, default, smollm, starcoder, "
        "llama-bpe, llama3)"));
  }
  auto result = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  result->name_ = pre.empty() ? "default" : std::string(pre);
  for (std::string_view p : patterns) {
    const std::string pattern =
        absl::StrReplaceAll(std::string(p), {{"WS", std::string(kWhitespace)}});
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto stage = std::make_unique<Stage>();
    stage->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (stage->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InternalError(absl::StrCat("pre-tokenizer '", result->name_,
                                              "': PCRE2 rejects pattern at offset ", error_offset,
                                              ": ", reinterpret_cast<const char*>(message)));
    }
    // JIT is an optimisation only: without it (unsupported CPU) matching is interpreted.
    pcre2_jit_compile(stage->code, PCRE2_JIT_COMPLETE);
    result->stages_.push_back(std::move(stage));
  }
  return result;
}

absl::Status PreTokenizer::Split(std::string_view text,
                                 std::vector<std::string_view>* pieces) const {
  // A piece and whether it is well-formed UTF-8 (regexes run only on those).
  struct Piece {
    std::string_view text;
    bool utf8;
  };
  std::vector<Piece> current, next;
  for (size_t pos = 0, run = 0; pos <= text.size();) {
    size_t len = 0;
    const bool end = pos == text.size();
    if (!end && ScanUtf8(text.substr(pos), &len) == Utf8Scan::kComplete) {
      pos += len;
      continue;
    }
    if (pos > run) current.push_back({text.substr(run, pos - run), true});
    if (end) break;
    current.push_back({text.substr(pos, 1), false});
    run = ++pos;
  }

  for (const auto& stage : stages_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(stage->code, nullptr);
    if (md == nullptr) return absl::ResourceExhaustedError("pre-tokenizer: out of memory");
    next.clear();
    for (const Piece& piece : current) {
      if (!piece.utf8) {
        next.push_back(piece);
        continue;
      }
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.text.data());
      size_t start = 0;  // end of the last match
      size_t offset = 0;
      while (offset < piece.text.size()) {
        const int rc = pcre2_match(stage->code, subject, piece.text.size(), offset,
                                   PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR message[256];
          pcre2_get_error_message(rc, message, sizeof(message));
          pcre2_match_data_free(md);
          return absl::ResourceExhaustedError(
              absl::StrCat("pre-tokenizer '", name_, "' failed on a ", piece.text.size(),
                           "-byte piece: ", reinterpret_cast<const char*>(message)));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t m0 = ov[0], m1 = ov[1];
        if (m1 == m0) {  // empty match (no pattern here has one): step over one character
          offset = m0 + std::max<size_t>(1, Utf8CharLen(piece.text, m0));
          continue;
        }
        if (m0 > start) next.push_back({piece.text.substr(start, m0 - start), true});
        next.push_back({piece.text.substr(m0, m1 - m0), true});
        start = offset = m1;
      }
      if (start < piece.text.size()) next.push_back({piece.text.substr(start), true});
    }
    pcre2_match_data_free(md);
    std::swap(current, next);
  }
  for (const Piece& piece : current) pieces->push_back(piece.text);
  return absl::OkStatus();
}

}  // namespace tessera
