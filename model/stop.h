// When a generation ends, and which text a client may see before it does.
//
// StopMatcher watches the streamed text for stop strings. Text that could still turn out to be
// the start of a stop string is held back, so a stop string (or a piece of one) is never
// streamed, even when it spans several tokens; once a held-back stretch can no longer begin a
// stop string it is released. The stop string itself is not part of the output (OpenAI
// semantics). The first occurrence to be completed wins (among those completing at the same
// byte, the longest), which makes the result independent of how the text was cut into pieces.
// If the pieces and the stop strings are valid UTF-8, released text only splits between
// characters: a held-back suffix starts where a stop string starts.
//
// StopChecker adds the token-level conditions: EOS ids (from the model's metadata: finish
// "eos"), user stop token ids (finish "stop"), and max_tokens (finish "length").
//
// Thread-safety: none; one per sequence.
#ifndef TESSERA_MODEL_STOP_H_
#define TESSERA_MODEL_STOP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera {

enum class FinishReason {
  kLength,     // max_tokens generated
  kStop,       // a stop string or a user stop token id
  kEos,        // an end-of-generation token of the model
  kCancelled,  // ended from outside (client gone); never produced by StopChecker
};
// "length", "stop", "eos", "cancelled".
absl::string_view FinishReasonName(FinishReason reason);

struct StopConditions {
  static constexpr int kMaxStopStrings = 16;
  static constexpr int kMaxStopStringBytes = 256;

  int32_t max_tokens = 0;               // generated tokens allowed; >= 0, 0 = no limit here
  std::vector<int32_t> eos_token_ids;   // from the model (EOS / EOT / <|im_end|> ...)
  std::vector<int32_t> stop_token_ids;  // from the request
  std::vector<std::string> stop_strings;

  // InvalidArgument naming the field and value: negative max_tokens or ids, an empty stop
  // string, more than kMaxStopStrings strings or one longer than kMaxStopStringBytes.
  absl::Status Validate() const;
};

class StopMatcher {
 public:
  // Validates as StopConditions::Validate does for its strings.
  static absl::StatusOr<StopMatcher> Create(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;     // safe to stream now
    int stop_index = -1;  // index of the stop string that ended the text, or -1
    bool stopped() const { return stop_index >= 0; }
  };

  // Appends the next piece of generated text. After a stop, returns empty results.
  Result Push(absl::string_view piece);
  // The text still held back, released because generation ended for another reason (EOS,
  // length); empty after a stop.
  std::string Flush();
  bool stopped() const { return stop_index_ >= 0; }
  size_t held_bytes() const { return held_.size(); }

 private:
  explicit StopMatcher(std::vector<std::string> stop_strings)
      : stop_strings_(std::move(stop_strings)) {}

  std::vector<std::string> stop_strings_;
  std::string held_;  // received, not yet released; a prefix of some stop string
  int stop_index_ = -1;
};

class StopChecker {
 public:
  static absl::StatusOr<StopChecker> Create(StopConditions conditions);

  struct Step {
    std::string text;                    // to stream to the client now
    std::optional<FinishReason> finish;  // set on the step that ends the generation
  };

  // Feeds one generated token and its detokenized text (possibly empty, e.g. while a UTF-8
  // character is incomplete). An EOS or stop token's own text is not streamed; held-back text
  // is released with it. After the finish, returns empty steps carrying the same reason.
  Step OnToken(int32_t id, absl::string_view piece);

  // Releases held-back text when the caller ends the generation itself (context full,
  // cancelled).
  std::string Flush() { return matcher_.Flush(); }

  int32_t n_generated() const { return n_generated_; }
  std::optional<FinishReason> finish() const { return finish_; }

 private:
  StopChecker(StopConditions conditions, StopMatcher matcher)
      : conditions_(std::move(conditions)), matcher_(std::move(matcher)) {}

  StopConditions conditions_;
  StopMatcher matcher_;
  int32_t n_generated_ = 0;
  std::optional<FinishReason> finish_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_STOP_H_
