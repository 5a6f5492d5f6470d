// LocalExecutor: a StepExecutor over an in-process Engine holding the whole model, fed through a
// StepRunner that samples (TP = PP = 1, no workers). For scheduler and service tests and for
// in-process tools.
//
// It is ready from the start (epoch 1). Any failed step ends the epoch, as on a cluster: the
// next epoch starts with a fresh engine (an empty KV cache whose block ids are handed out as on
// a new worker) and an empty runner. A test hook injects such a failure, optionally followed
// by a time during which the executor is not ready.
//
// Thread-safety: Execute from one thread at a time (StepExecutor's contract); state(),
// WaitReady() and the hooks from any thread.
#ifndef TESSERA_COORDINATOR_LOCAL_EXECUTOR_H_
#define TESSERA_COORDINATOR_LOCAL_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/step_executor.h"
#include "kernels/backend.h"
#include "model/engine.h"
#include "model/weights.h"
#include "worker/step_runner.h"

namespace tessera {

struct LocalExecutorOptions {
  int64_t kv_blocks = 0;                         // > 0: exactly this many KV blocks
  int64_t kv_budget_bytes = int64_t{64} << 20;   // else as many as this holds
  int kv_block_tokens = 16;
  std::string name = "local engine";             // prefixes errors
};

class LocalExecutor final : public StepExecutor {
 public:
  // `weights` and `backend` must outlive the executor. Errors: the engine's (bad KV options).
  static absl::StatusOr<std::unique_ptr<LocalExecutor>> Create(const WeightSource* weights,
                                                               Backend* backend,
                                                               LocalExecutorOptions options);
  LocalExecutor(const LocalExecutor&) = delete;
  LocalExecutor& operator=(const LocalExecutor&) = delete;

  ExecutorState state() const override;
  ExecutorState WaitReady(absl::Duration timeout) override;
  // UNAVAILABLE when not ready, on an injected failure, or when the step fails on the engine
  // (the runner's message); each ends the epoch.
  absl::StatusOr<v1::StepResult> Execute(const v1::Step& step) override;

  // Test hook: the next Execute fails with UNAVAILABLE naming `reason`; the executor is then
  // not ready for `down_for` and comes back in a new epoch with a fresh engine.
  void FailNextStep(std::string reason, absl::Duration down_for = absl::ZeroDuration());

  // KV blocks the engine's own cache holds now (tests compare it with the scheduler's mirror).
  int64_t engine_used_blocks() const;
  int64_t steps() const;  // steps executed successfully, over all epochs

 private:
  LocalExecutor(const WeightSource* weights, Backend* backend, LocalExecutorOptions options,
                int64_t kv_blocks)
      : weights_(weights), backend_(backend), options_(std::move(options)),
        kv_blocks_(kv_blocks) {}
  // Ends the epoch: not ready until `until`; the next one gets a fresh engine.
  void EndEpoch(const std::string& reason, absl::Time until) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Becomes ready again once the down time has passed.
  void Refresh() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WeightSource* const weights_;
  Backend* const backend_;
  const LocalExecutorOptions options_;
  const int64_t kv_blocks_;

  mutable absl::Mutex mu_;
  mutable bool ready_ ABSL_GUARDED_BY(mu_) = true;
  mutable uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Time down_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_failure_ ABSL_GUARDED_BY(mu_);
  bool fail_next_ ABSL_GUARDED_BY(mu_) = false;
  std::string fail_reason_ ABSL_GUARDED_BY(mu_);
  absl::Duration fail_down_for_ ABSL_GUARDED_BY(mu_);
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;

  // The engine is held apart so that state() never waits for a step.
  mutable absl::Mutex run_mu_;
  uint64_t engine_epoch_ ABSL_GUARDED_BY(run_mu_) = 0;  // the epoch engine_ was made for
  std::unique_ptr<Engine> engine_ ABSL_GUARDED_BY(run_mu_);
  std::unique_ptr<StepRunner> runner_ ABSL_GUARDED_BY(run_mu_);
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_LOCAL_EXECUTOR_H_
