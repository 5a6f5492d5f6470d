// SchedulerSequence: one request's state inside a Scheduler (coordinator/scheduler.h): its
// tokens (prompt, then what was generated), where it stands in the replica's KV cache, and the
// output side (stop conditions, incremental detokenization, the messages streamed back).
//
// A sequence may run more than once: when the scheduler preempts it (frees its KV blocks to let
// older sequences decode), it goes back to the queue and later recomputes its prompt plus the
// tokens it already generated under a new SeqId, then goes on generating; what was streamed
// stays streamed.
//
// Thread-safety: none; owned by the scheduler thread (its stream is thread-safe).
#ifndef TESSERA_COORDINATOR_SCHEDULER_SEQUENCE_H_
#define TESSERA_COORDINATOR_SCHEDULER_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/request.h"
#include "model/kv_cache.h"
#include "model/stop.h"
#include "model/tokenizer.h"
#include "tessera/v1/worker.pb.h"

namespace tessera {

class SchedulerSequence {
 public:
  // Builds the stop checker (InvalidArgument for bad stop conditions). `max_tokens` of the
  // request is cut to what `context_length` leaves after the prompt (0 = up to the context).
  // `tokenizer` must outlive the sequence.
  static absl::StatusOr<std::unique_ptr<SchedulerSequence>> Create(ScheduledRequest request,
                                                                   const Tokenizer* tokenizer,
                                                                   int64_t context_length);
  SchedulerSequence(const SchedulerSequence&) = delete;
  SchedulerSequence& operator=(const SchedulerSequence&) = delete;

  const ScheduledRequest& request() const { return request_; }
  RequestStream& stream() { return *request_.stream; }

  // Prompt, then every generated token (the last one not yet in the KV cache while decoding).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t n_prompt() const { return n_prompt_; }
  int64_t n_generated() const { return n_generated_; }
  int64_t max_tokens() const { return max_tokens_; }
  // The most tokens the KV cache ever holds for it: the last generated token is never fed.
  int64_t max_kv_tokens() const { return n_prompt_ + max_tokens_ - 1; }

  // --- The current admission (the scheduler sets these).
  SeqId id = 0;           // 0: not admitted (waiting)
  int64_t computed = 0;   // tokens in the KV cache (the mirror's Length)
  // Tokens still to feed: the rest of the prompt (or of the recompute), or the one sampled.
  int64_t pending() const { return static_cast<int64_t>(tokens_.size()) - computed; }
  // Prefill done: every token but the last sampled one is in the cache.
  bool decoding() const { return n_generated_ > 0 && pending() == 1; }
  void Admitted(SeqId seq, absl::Time now);
  void Preempted() { id = 0, computed = 0; ++preemptions_; }
  int preemptions() const { return preemptions_; }

  // This sequence's sampling setup as the workers get it on its first input.
  v1::SequenceSampling SamplingProto() const;

  // Records the token sampled after the last fed token: streams a message with its text and
  // the token (logprobs and the alternatives' text when asked). Returns true when the
  // generation ended: the message carried finish_reason and usage and the stream is finished
  // OK. An error (a token id the tokenizer does not know) is the caller's to report.
  absl::StatusOr<bool> OnToken(const v1::Token& token, absl::Time now);

  // Ends the request with an error (or a cancellation status); idempotent.
  void Fail(const absl::Status& status) { request_.stream->Finish(status); }

 private:
  SchedulerSequence(ScheduledRequest request, const Tokenizer* tokenizer, StopChecker checker,
                    int64_t max_tokens);

  ScheduledRequest request_;
  const Tokenizer* tokenizer_;
  StopChecker checker_;
  Detokenizer detok_;
  std::vector<int32_t> tokens_;
  int64_t n_prompt_ = 0;
  int64_t n_generated_ = 0;
  int64_t max_tokens_ = 0;
  int preemptions_ = 0;
  std::optional<absl::Time> admitted_at_;  // first admission
  absl::Time first_token_at_;
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_SCHEDULER_SEQUENCE_H_
