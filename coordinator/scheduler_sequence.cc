#include "coordinator/scheduler_sequence.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/prepare_request.h"

namespace tessera {
namespace {

v1::FinishReason FinishReasonProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SchedulerSequence>> SchedulerSequence::Create(
    ScheduledRequest request, const Tokenizer* tokenizer, int64_t context_length) {
  if (request.stream == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("request '", request.id, "' has no stream to answer through"));
  }
  if (request.prompt.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request '", request.id, "': the prompt is empty: give at least one token"));
  }
  const int64_t n_prompt = static_cast<int64_t>(request.prompt.size());
  if (n_prompt >= context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request '", request.id, "': the prompt has ", n_prompt, " tokens; the model's context is ",
        context_length, " tokens, which leaves no room to generate"));
  }
  const int64_t room = context_length - n_prompt;
  if (request.stop.max_tokens > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request '", request.id, "': max_tokens = ", request.stop.max_tokens, " with a prompt of ",
        n_prompt, " tokens exceeds the model's context of ", context_length, " tokens (at most ",
        room, ")"));
  }
  const int64_t max_tokens = request.stop.max_tokens > 0 ? request.stop.max_tokens : room;
  StopConditions conditions = request.stop;
  conditions.max_tokens = static_cast<int32_t>(max_tokens);
  absl::StatusOr<StopChecker> checker = StopChecker::Create(std::move(conditions));
  if (!checker.ok()) {
    return absl::Status(checker.status().code(),
                        absl::StrCat("request '", request.id, "': ", checker.status().message()));
  }
  return std::unique_ptr<SchedulerSequence>(new SchedulerSequence(
      std::move(request), tokenizer, *std::move(checker), max_tokens));
}

SchedulerSequence::SchedulerSequence(ScheduledRequest request, const Tokenizer* tokenizer,
                                     StopChecker checker, int64_t max_tokens)
    : request_(std::move(request)),
      tokenizer_(tokenizer),
      checker_(std::move(checker)),
      detok_(*tokenizer),
      tokens_(request_.prompt),
      n_prompt_(static_cast<int64_t>(request_.prompt.size())),
      max_tokens_(max_tokens) {}

void SchedulerSequence::Admitted(SeqId seq, absl::Time now) {
  id = seq;
  computed = 0;
  if (!admitted_at_.has_value()) admitted_at_ = now;
}

v1::SequenceSampling SchedulerSequence::SamplingProto() const {
  const SamplingParams& s = request_.sampling;
  v1::SequenceSampling out;
  v1::SamplingParams* p = out.mutable_params();
  p->set_temperature(s.temperature);
  p->set_top_k(s.top_k);
  p->set_top_p(s.top_p);
  p->set_min_p(s.min_p);
  p->set_repetition_penalty(s.repetition_penalty);
  p->set_repeat_last_n(s.repeat_last_n);
  p->set_frequency_penalty(s.frequency_penalty);
  p->set_presence_penalty(s.presence_penalty);
  p->set_seed(s.seed);
  out.set_logprobs(request_.logprobs);
  out.set_logprob_of_chosen(request_.logprob_of_chosen || request_.logprobs > 0);
  // After a preemption the recompute feeds the prompt and then the tokens generated so far;
  // the sampling rank replays the latter so the sequence continues exactly.
  out.set_prompt_tokens(static_cast<uint32_t>(n_prompt_));
  return out;
}

absl::StatusOr<bool> SchedulerSequence::OnToken(const v1::Token& token, absl::Time now) {
  const int32_t id_sampled = token.id();
  // The same order as in-process Generate (model/generate.cc): detokenize, check the stop
  // conditions, and on an ending other than a stop string release the detokenizer's held bytes.
  absl::StatusOr<std::string> piece = detok_.Next(id_sampled);
  if (!piece.ok()) {
    return absl::InternalError(absl::StrCat("request '", request_.id, "': sampled token ",
                                            id_sampled, ": ", piece.status().message()));
  }
  if (n_generated_ == 0) first_token_at_ = now;
  ++n_generated_;
  tokens_.push_back(id_sampled);
  StopChecker::Step step = checker_.OnToken(id_sampled, *piece);

  v1::GenerateResponse message;
  message.set_request_id(request_.id);
  if (step.finish.has_value() && *step.finish != FinishReason::kStop) step.text += detok_.Flush();
  message.set_text(std::move(step.text));
  v1::Token* out = message.add_tokens();
  *out = token;
  for (v1::TokenLogprob& alt : *out->mutable_top_logprobs()) {
    alt.set_text(TokenPiece(*tokenizer_, alt.id()));
  }
  if (!step.finish.has_value()) {
    request_.stream->Push(std::move(message));
    return false;
  }
  message.set_finish_reason(FinishReasonProto(*step.finish));
  v1::Usage* usage = message.mutable_usage();
  const absl::Time received = request_.received;
  usage->set_prompt_tokens(static_cast<uint32_t>(n_prompt_));
  usage->set_generated_tokens(static_cast<uint32_t>(n_generated_));
  usage->set_time_to_first_token_s(absl::ToDoubleSeconds(first_token_at_ - received));
  usage->set_total_s(absl::ToDoubleSeconds(now - received));
  usage->set_queue_s(absl::ToDoubleSeconds(admitted_at_.value_or(now) - received));
  request_.stream->Push(std::move(message));
  request_.stream->Finish(absl::OkStatus());
  return true;
}

}  // namespace tessera
