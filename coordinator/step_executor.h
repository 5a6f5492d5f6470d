// StepExecutor: where the scheduler's batches run. One executor is one replica group: the TP x
// PP workers of the cluster (coordinator/cluster.h, over their Attach streams) or, in tests and
// in-process tools, a local engine (coordinator/local_executor.h).
//
// Life cycle: an executor is ready or not. Each time it becomes ready it starts a new epoch with
// a fresh, empty KV cache of kv_blocks blocks on every rank; the scheduler then builds a fresh
// mirror of that cache (model/kv_cache.h) and numbers steps from 1. When Execute fails the
// epoch is over: every sequence of it is gone on the workers, and the scheduler fails those
// requests (UNAVAILABLE) and waits for the next epoch.
//
// Thread-safety: Execute is called by one scheduler thread at a time; state() and WaitReady()
// from any thread.
#ifndef TESSERA_COORDINATOR_STEP_EXECUTOR_H_
#define TESSERA_COORDINATOR_STEP_EXECUTOR_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tessera/v1/worker.pb.h"

namespace tessera {

struct ExecutorState {
  bool ready = false;
  uint64_t epoch = 0;          // increases each time the group becomes ready
  int64_t kv_blocks = 0;       // KV blocks of this epoch (the same on every rank)
  int kv_block_tokens = 16;
  std::string description;     // "ready", "waiting for 2 of 4 workers", "failed: ..."
};

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;

  virtual ExecutorState state() const = 0;
  // Returns as soon as the executor is ready (or at once if it is), else after `timeout`.
  virtual ExecutorState WaitReady(absl::Duration timeout) = 0;

  // Runs one step (worker.proto) on every rank of the group and returns the sampling rank's
  // result. Errors: UNAVAILABLE when the group is not ready or breaks during the step (a worker
  // died or answered with an error: the message names it); the epoch is then over.
  virtual absl::StatusOr<v1::StepResult> Execute(const v1::Step& step) = 0;
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_STEP_EXECUTOR_H_
