// A generate request on its way through the coordinator: what the public service hands the
// scheduler once the request is validated and tokenized (ScheduledRequest), and the channel the
// scheduler streams the answer back through (RequestStream).
//
// RequestStream connects two threads: the scheduler thread pushes response messages and finally
// finishes the stream with a status; the RPC thread waits for them and writes them to the
// client. When the client goes away or its deadline passes, the RPC thread cancels the stream;
// the scheduler sees cancelled() at its next step, drops the sequence and frees its KV blocks.
//
// Thread-safety: RequestStream is safe to use from any thread; ScheduledRequest is a value.
#ifndef TESSERA_COORDINATOR_REQUEST_H_
#define TESSERA_COORDINATOR_REQUEST_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/sampler.h"
#include "model/stop.h"
#include "tessera/v1/generate.pb.h"

namespace tessera {

// "length", "stop", "eos" or "cancelled"; "unfinished" for FINISH_REASON_UNSPECIFIED. Used in
// metrics labels and the CLI's summaries.
std::string FinishReasonName(v1::FinishReason reason);

class RequestStream {
 public:
  RequestStream() = default;
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  // --- scheduler side
  // Queues a message for the client (ignored once finished).
  void Push(v1::GenerateResponse message);
  // Ends the stream: OK after the last message (the one with finish_reason), else the error the
  // client gets. Only the first call counts.
  void Finish(absl::Status status);
  bool cancelled() const;
  // Why the stream was cancelled (CANCELLED or DEADLINE_EXCEEDED); OK if it was not.
  absl::Status cancel_reason() const;

  // --- RPC side
  enum class Event { kMessage, kFinished, kTimeout };
  // Waits up to `timeout` for the next message (kMessage, into *message) or, once every message
  // has been taken, the end of the stream (kFinished, its status into *status).
  Event Next(absl::Duration timeout, v1::GenerateResponse* message, absl::Status* status);
  // The client went away or its deadline passed. Only the first call counts.
  void Cancel(absl::Status reason);

 private:
  mutable absl::Mutex mu_;
  std::deque<v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> finished_ ABSL_GUARDED_BY(mu_);
  absl::Status cancelled_ ABSL_GUARDED_BY(mu_);
};

// A validated, tokenized request, ready for a scheduler.
struct ScheduledRequest {
  std::string id;                 // the client's request_id, or one the service made up
  std::vector<int32_t> prompt;    // token ids (chat template and BOS applied); not empty
  SamplingParams sampling;        // validated
  uint32_t logprobs = 0;          // top alternatives per token (0..20)
  bool logprob_of_chosen = false;  // the chosen token's logprob (implied by logprobs > 0)
  StopConditions stop;            // validated; max_tokens resolved (> 0), eos ids of the model
  absl::Time received = absl::Now();
  std::shared_ptr<RequestStream> stream;
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_REQUEST_H_
