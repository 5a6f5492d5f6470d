// Scheduler: continuous batching for one replica group (a StepExecutor), on its own thread.
//
// Requests wait in a bounded first-come-first-served queue. Every step the scheduler
//   1. drops cancelled requests (client gone, deadline passed) and frees their KV blocks;
//   2. gives every decoding sequence its next token, oldest first; when the KV cache cannot
//      hold a decode's next block, it preempts the newest running sequence (frees its blocks
//      and puts it back at the front of the queue, to recompute its prompt and output later);
//   3. continues running prefills and admits waiting requests in order, in chunks of at most
//      prefill_chunk tokens, while the step's token budget (max_step_tokens) lasts and the KV
//      cache holds their whole remaining prompt plus one block of headroom per running
//      sequence (so that decodes rarely need preemption); a request that does not fit waits,
//      and so does everyone behind it (no overtaking);
//   4. sends one Step (worker.proto) and streams each sampled token back: stop conditions and
//      incremental detokenization here on the coordinator (coordinator/scheduler_sequence.h).
//
// KV mirror: the scheduler keeps a KvBlockManager that receives exactly the calls every rank's
// Engine::Step makes for the same Step (the frees, then Reserve(id, length + n_tokens) per input
// in input order), so the block tables it puts in each SeqInput are the ones the ranks derive,
// and admission sees the cache as it is.
//
// Epochs: when Execute fails (or the executor's epoch changes under it) every admitted request
// of that epoch ends with UNAVAILABLE naming the replica and the cause; waiting requests stay
// queued and run in the next epoch with a fresh mirror, unless the executor stays not ready for
// longer than not_ready_timeout, after which they fail with UNAVAILABLE too.
//
// Recompute after preemption is exact for greedy sampling without frequency/presence penalties:
// the workers rebuild the sequence's sampler from its first input, so a sampled sequence (or one
// with those penalties) continues with a fresh random stream (see the report on worker.proto).
//
// Thread-safety: Submit, load and Stop may be called from any thread.
#ifndef TESSERA_COORDINATOR_SCHEDULER_H_
#define TESSERA_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/request.h"
#include "coordinator/scheduler_sequence.h"
#include "coordinator/step_executor.h"
#include "metrics/metrics.h"
#include "model/kv_cache.h"
#include "model/tokenizer.h"

namespace tessera {

struct SchedulerOptions {
  int replica = 0;                // metrics label, and "replica N" in messages
  int64_t context_length = 0;     // the model's n_ctx (> 0)
  const Tokenizer* tokenizer = nullptr;  // detokenization; not owned, must outlive the scheduler
  int64_t max_waiting = 256;      // queued requests at most; Submit refuses beyond
  int64_t max_running = 64;       // sequences holding KV blocks at most (<= max_step_tokens)
  int64_t max_step_tokens = 512;  // tokens per step (decode tokens + prefill chunks)
  int64_t prefill_chunk = 512;    // prompt tokens of one sequence per step at most
  absl::Duration idle_poll = absl::Milliseconds(10);  // cancellation checks when idle
  absl::Duration not_ready_timeout = absl::Seconds(30);  // waiting requests fail after it
  CoordinatorMetrics* metrics = nullptr;  // not owned; may be null
};

// One replica's load (for routing and GetModelInfo).
struct SchedulerLoad {
  bool ready = false;        // the executor is ready and the scheduler running
  uint64_t epoch = 0;        // the executor's epoch
  std::string state;         // the executor's description ("ready", "waiting for ...")
  int64_t waiting = 0;       // queued requests (preempted ones included)
  int64_t running = 0;       // sequences admitted in this epoch (holding KV blocks)
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t preemptions = 0;   // sequences preempted (to recompute) since the start
  int64_t steps = 0;         // steps executed since the start
};

class Scheduler {
 public:
  // Checks the options (InvalidArgument naming the field and value) and starts the thread.
  // `executor` must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(StepExecutor* executor,
                                                           SchedulerOptions options);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();  // Stop()

  // Queues a request; its answer comes through request.stream. Errors (the stream is left
  // untouched): UNAVAILABLE when the executor is not ready or the scheduler is stopping;
  // RESOURCE_EXHAUSTED when the queue is full (naming the bound) or when prompt + max_tokens
  // can never fit in the replica's KV cache (naming the blocks); INVALID_ARGUMENT when they
  // can never fit in the context length, or for an empty prompt, bad stop conditions or a
  // missing stream.
  absl::Status Submit(ScheduledRequest request);

  SchedulerLoad load() const;

  // Fails every queued and running request with UNAVAILABLE "shutting down" and joins the
  // thread. Idempotent.
  void Stop();

 private:
  using SequencePtr = std::unique_ptr<SchedulerSequence>;
  struct Planned;  // one input of the step being built

  Scheduler(StepExecutor* executor, SchedulerOptions options);
  void Loop();
  // Runs one step if there is anything to run; returns whether it did.
  bool RunStep();
  // Starts the executor's epoch `state`: fails what ran in the previous one, fresh mirror.
  void StartEpoch(const ExecutorState& state);
  // Fails every running sequence with `status` (the epoch is over on the workers).
  void FailRunning(const absl::Status& status);
  // Frees a running sequence's blocks now (mirror) and at the next step (workers).
  void Release(SchedulerSequence& seq);
  // Preempts the newest running sequence back to the front of the queue.
  void PreemptNewest();
  void DropCancelled();
  void PublishLoad();
  std::string Name() const;

  StepExecutor* const executor_;
  const SchedulerOptions options_;

  // Scheduler thread only.
  std::unique_ptr<KvBlockManager> mirror_;  // null until the first epoch
  uint64_t epoch_ = 0;
  uint64_t step_id_ = 0;
  SeqId next_seq_id_ = 1;
  std::vector<SequencePtr> running_;  // admission order (oldest first)
  std::vector<SeqId> to_free_;        // freed in the mirror, not yet on the workers
  bool epoch_failed_ = false;        // Execute failed in epoch_: wait for the next one
  absl::Time not_ready_since_ = absl::InfiniteFuture();

  mutable absl::Mutex mu_;
  std::deque<SequencePtr> waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t submissions_ ABSL_GUARDED_BY(mu_) = 0;  // wakes the idle loop
  int64_t published_running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t published_kv_used_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t published_kv_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t published_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t preemptions_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_SCHEDULER_H_
