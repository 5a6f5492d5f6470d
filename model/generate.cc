#include "model/generate.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "model/stop.h"

namespace tessera {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Frees the sequence however Generate exits.
struct SeqGuard {
  Engine& engine;
  SeqId seq;
  ~SeqGuard() { engine.Free(seq); }
};

}  // namespace

absl::StatusOr<GenerateResult> Generate(Engine& engine, const Tokenizer& tokenizer,
                                        const GenerateRequest& request, SeqId seq,
                                        const std::function<void(std::string_view)>& on_text) {
  const ModelConfig& c = engine.config();
  if (request.prompt.empty()) {
    return absl::InvalidArgumentError("the prompt is empty: give at least one token");
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens = ", request.max_tokens, " is invalid: must be >= 1"));
  }
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  if (n_prompt >= c.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", n_prompt,
                                                   " tokens; the model's context is ", c.n_ctx,
                                                   " tokens, which leaves no room to generate"));
  }
  TESSERA_ASSIGN_OR_RETURN(Sampler sampler,
                           Sampler::Create(request.sampling, static_cast<int32_t>(c.n_vocab)));
  TESSERA_RETURN_IF_ERROR(sampler.AddPromptTokens(request.prompt));
  if (engine.Length(seq) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " is already running"));
  }
  SeqGuard guard{engine, seq};

  GenerateResult result;
  result.prompt_tokens = n_prompt;
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  const int64_t chunk = std::max<int64_t>(1, request.prefill_chunk);
  for (int64_t pos = 0; pos < n_prompt; pos += chunk) {
    const int64_t end = std::min(n_prompt, pos + chunk);
    StepInput in{seq, std::vector<int32_t>(request.prompt.begin() + pos,
                                           request.prompt.begin() + end),
                 end == n_prompt};
    TESSERA_RETURN_IF_ERROR(engine.Step({in}, &logits));
  }

  StopConditions conditions;
  conditions.max_tokens = static_cast<int32_t>(std::min(request.max_tokens, c.n_ctx - n_prompt));
  for (int32_t id = 0; id < tokenizer.n_tokens(); ++id) {
    if (tokenizer.IsEndOfGeneration(id)) conditions.eos_token_ids.push_back(id);
  }
  conditions.stop_token_ids = request.stop_token_ids;
  conditions.stop_strings = request.stop;
  TESSERA_ASSIGN_OR_RETURN(StopChecker checker, StopChecker::Create(std::move(conditions)));

  Detokenizer detok(tokenizer);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    result.text += piece;
    if (on_text) on_text(piece);
  };
  std::chrono::steady_clock::time_point first_token_at;
  for (int64_t i = 0;; ++i) {
    TESSERA_ASSIGN_OR_RETURN(SampledToken tok, sampler.Sample(logits));
    if (i == 0) {
      first_token_at = std::chrono::steady_clock::now();
      result.time_to_first_token_s = Since(start);
    }
    result.tokens.push_back(tok);
    TESSERA_ASSIGN_OR_RETURN(std::string piece, detok.Next(tok.id));
    StopChecker::Step step = checker.OnToken(tok.id, piece);
    emit(step.text);
    if (step.finish.has_value()) {
      result.finish_reason = std::string(FinishReasonName(*step.finish));
      if (*step.finish != FinishReason::kStop) {
        // Bytes of a character the length limit cut off become U+FFFD, as the stream ends.
        emit(detok.Flush());
      }
      break;
    }
    TESSERA_RETURN_IF_ERROR(engine.Step({{seq, {tok.id}, true}}, &logits));
  }
  result.decode_s = Since(first_token_at);
  return result;
}

}  // namespace tessera
