// Generating one completion in-process: prefill the prompt in chunks, then decode token by
// token, sampling each with the request's parameters and streaming the text as soon as it is
// safe to show (whole UTF-8 characters, never a piece of a stop string).
//
// This is what `tessera generate` runs with the whole model; the cluster's scheduler does the
// same per sequence with many sequences batched.
#ifndef TESSERA_MODEL_GENERATE_H_
#define TESSERA_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/engine.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

namespace tessera {

struct GenerateRequest {
  std::vector<int32_t> prompt;      // token ids, BOS included if the model wants one
  SamplingParams sampling;
  int64_t max_tokens = 256;         // generated tokens at most
  std::vector<std::string> stop;    // stop strings (not streamed)
  std::vector<int32_t> stop_token_ids;  // besides the tokenizer's end-of-generation tokens
  int64_t prefill_chunk = 512;      // prompt tokens per engine step
};

struct GenerateResult {
  std::string finish_reason;        // "length", "stop" (stop string or id), "eos"
  std::vector<SampledToken> tokens;  // generated tokens (with logprobs when asked)
  std::string text;                 // everything streamed
  int64_t prompt_tokens = 0;
  double time_to_first_token_s = 0;  // prompt in, first token out
  double decode_s = 0;               // after the first token, until the end
};

// Runs `request` as sequence `seq` of `engine` (freed at the end, also on error).
// `on_text` receives each newly streamable piece of text.
absl::StatusOr<GenerateResult> Generate(Engine& engine, const Tokenizer& tokenizer,
                                        const GenerateRequest& request, SeqId seq,
                                        const std::function<void(std::string_view)>& on_text);

}  // namespace tessera

#endif  // TESSERA_MODEL_GENERATE_H_
