#include "coordinator/local_executor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tessera {
namespace {

EngineOptions MakeEngineOptions(const LocalExecutorOptions& o, int64_t kv_blocks) {
  EngineOptions e;
  e.kv_budget_bytes = o.kv_budget_bytes;
  e.kv_block_tokens = o.kv_block_tokens;
  e.kv_blocks = kv_blocks;
  return e;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalExecutor>> LocalExecutor::Create(
    const WeightSource* weights, Backend* backend, LocalExecutorOptions options) {
  if (weights == nullptr || backend == nullptr) {
    return absl::InvalidArgumentError("local executor: weights and backend are required");
  }
  const ModelShard whole = ModelShard::Whole(weights->config());
  absl::StatusOr<int64_t> blocks = Engine::KvBlockCapacity(
      weights->config(), whole, MakeEngineOptions(options, options.kv_blocks));
  if (!blocks.ok()) return blocks.status();
  std::unique_ptr<LocalExecutor> e(
      new LocalExecutor(weights, backend, std::move(options), *blocks));
  // The engine of epoch 1, made now so that a model the backend cannot load fails here.
  absl::MutexLock lock(&e->run_mu_);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(
      *weights, whole, backend, nullptr, MakeEngineOptions(e->options_, e->kv_blocks_));
  if (!engine.ok()) return engine.status();
  e->engine_ = *std::move(engine);
  e->runner_ = std::make_unique<StepRunner>(e->engine_.get(), /*sampler=*/true, e->options_.name);
  e->engine_epoch_ = 1;
  return e;
}

void LocalExecutor::Refresh() const {
  if (!ready_ && absl::Now() >= down_until_) {
    ready_ = true;
    ++epoch_;
  }
}

void LocalExecutor::EndEpoch(const std::string& reason, absl::Time until) {
  ready_ = false;
  down_until_ = until;
  last_failure_ = reason;
}

ExecutorState LocalExecutor::state() const {
  absl::MutexLock lock(&mu_);
  Refresh();
  ExecutorState s;
  s.ready = ready_;
  s.epoch = epoch_;
  s.kv_blocks = kv_blocks_;
  s.kv_block_tokens = options_.kv_block_tokens;
  s.description = ready_ ? "ready" : absl::StrCat("failed: ", last_failure_);
  return s;
}

ExecutorState LocalExecutor::WaitReady(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Time wake;
    {
      absl::MutexLock lock(&mu_);
      Refresh();
      const absl::Time now = absl::Now();
      if (ready_ || now >= deadline) break;
      wake = std::min({deadline, down_until_, now + absl::Milliseconds(5)});
    }
    absl::SleepFor(wake - absl::Now());
  }
  return state();
}

void LocalExecutor::FailNextStep(std::string reason, absl::Duration down_for) {
  absl::MutexLock lock(&mu_);
  fail_next_ = true;
  fail_reason_ = std::move(reason);
  fail_down_for_ = down_for;
}

absl::StatusOr<v1::StepResult> LocalExecutor::Execute(const v1::Step& step) {
  uint64_t epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    Refresh();
    if (!ready_) {
      return absl::UnavailableError(
          absl::StrCat(options_.name, " is not ready (failed: ", last_failure_, ")"));
    }
    if (fail_next_) {
      fail_next_ = false;
      EndEpoch(absl::StrCat("injected failure: ", fail_reason_), absl::Now() + fail_down_for_);
      return absl::UnavailableError(
          absl::StrCat(options_.name, ", step ", step.step_id(), ": ", last_failure_));
    }
    epoch = epoch_;
  }
  absl::MutexLock run_lock(&run_mu_);
  if (engine_epoch_ != epoch) {
    runner_.reset();
    engine_.reset();
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Create(*weights_, ModelShard::Whole(weights_->config()), backend_, nullptr,
                       MakeEngineOptions(options_, kv_blocks_));
    if (!engine.ok()) {
      absl::MutexLock lock(&mu_);
      EndEpoch(std::string(engine.status().message()), absl::Now());
      return absl::UnavailableError(absl::StrCat(options_.name, ": the engine of epoch ", epoch,
                                                 " failed: ", engine.status().message()));
    }
    engine_ = *std::move(engine);
    runner_ = std::make_unique<StepRunner>(engine_.get(), /*sampler=*/true, options_.name);
    engine_epoch_ = epoch;
  }
  absl::StatusOr<v1::StepResult> result = runner_->Run(step);
  absl::MutexLock lock(&mu_);
  if (!result.ok()) {
    // The runner's sequences may be half-applied: the epoch is over, as on a cluster.
    EndEpoch(std::string(result.status().message()), absl::Now());
    engine_epoch_ = 0;
    return absl::UnavailableError(result.status().message());
  }
  ++steps_;
  return result;
}

int64_t LocalExecutor::engine_used_blocks() const {
  absl::MutexLock lock(&run_mu_);
  return engine_ != nullptr ? engine_->kv().used_blocks() : 0;
}

int64_t LocalExecutor::steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

}  // namespace tessera
