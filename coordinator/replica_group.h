// ReplicaGroup: one replica of the model, TP x PP workers over their Attach streams, as the
// scheduler's StepExecutor (coordinator/step_executor.h). It owns the group's half of the
// worker protocol (worker.proto): formation, steps and failure.
//
// Slots: rank r (= pp_stage * tp + tp_rank) has a slot that a worker fills (the Cluster picks
// who); a worker keeps its slot until its stream ends. Phases:
//
//   waiting    some slot is vacant
//   assigning  every slot filled: Assignment sent to each rank, collecting Prepared
//   connecting Connect sent (addresses by rank, kv_blocks = min capacity), collecting Ready
//   ready      a new epoch; Execute runs steps
//   failed     a rank answered Failed or an error StepResult, a step or the formation timed
//              out: the survivors got Reset; formation starts again after a delay (doubling
//              with consecutive failures) if every slot is still filled
//
// A stream that ends vacates its slot and fails the group the same way; the group forms again
// as soon as the slot is filled. Every failure ends the epoch: an Execute in flight returns
// UNAVAILABLE naming the worker at once.
//
// Thread-safety: thread-safe. Execute is called by one thread at a time (StepExecutor's
// contract); the On* events come from the workers' Attach handler threads.
#ifndef TESSERA_COORDINATOR_REPLICA_GROUP_H_
#define TESSERA_COORDINATOR_REPLICA_GROUP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/cluster_worker.h"
#include "coordinator/step_executor.h"
#include "metrics/metrics.h"
#include "sharding/planner.h"
#include "tessera/v1/generate.pb.h"
#include "tessera/v1/worker.pb.h"

namespace tessera {

// What every group of a cluster shares.
struct ReplicaGroupOptions {
  std::string model_path;  // sent in Assignments
  std::string model_sha;   // "" or the file's "size:mtime"
  int kv_block_tokens = 16;
  int64_t kv_cache_bytes = 0;  // per worker; 0 = the worker's default
  absl::Duration communicator_timeout = absl::Seconds(30);
  absl::Duration step_timeout = absl::Seconds(60);
  absl::Duration formation_timeout = absl::Minutes(10);  // Assignment -> every rank Ready
  absl::Duration retry_delay = absl::Seconds(1);         // first re-formation after a failure
  absl::Duration max_retry_delay = absl::Seconds(30);
  CoordinatorMetrics* metrics = nullptr;  // may be null
};

class ReplicaGroup final : public StepExecutor {
 public:
  // `plan` is the cluster's layout (its ranks give every slot's shard). `assignment_ids` is the
  // cluster's counter (assignment ids increase over the whole coordinator).
  ReplicaGroup(int replica, const Plan& plan, ReplicaGroupOptions options,
               std::atomic<uint64_t>* assignment_ids);
  ReplicaGroup(const ReplicaGroup&) = delete;
  ReplicaGroup& operator=(const ReplicaGroup&) = delete;
  ~ReplicaGroup() override = default;

  // --- StepExecutor
  ExecutorState state() const override;
  ExecutorState WaitReady(absl::Duration timeout) override;
  absl::StatusOr<v1::StepResult> Execute(const v1::Step& step) override;

  int replica() const { return replica_; }
  int n_ranks() const { return static_cast<int>(plan_.ranks.size()); }
  const RankPlan& rank_plan(int rank) const { return plan_.ranks[rank]; }

  // --- Slots (called by the Cluster)
  // The lowest vacant rank, or -1 when every slot is filled.
  int FirstVacantRank() const;
  // Puts `worker` in slot `rank` (which must be vacant); forms the group once all are filled.
  void Fill(int rank, std::shared_ptr<AttachedWorker> worker);
  // The stream of the worker in slot `rank` ended: vacates the slot and fails the group.
  void WorkerGone(int rank, const AttachedWorker* worker);

  // --- Messages from the worker in slot `rank` (ignored if it no longer holds the slot or the
  // message belongs to an earlier assignment).
  void OnPrepared(int rank, const AttachedWorker* worker, const v1::Prepared& prepared);
  void OnReady(int rank, const AttachedWorker* worker, const v1::Ready& ready);
  void OnFailed(int rank, const AttachedWorker* worker, const v1::Failed& failed);
  void OnStepResult(int rank, const AttachedWorker* worker, const v1::StepResult& result);

  // Fails a formation that passed formation_timeout and starts a due re-formation.
  void Tick(absl::Time now);

  // Not ready from now on: an Execute in flight and later ones return UNAVAILABLE with
  // `reason`, WaitReady returns at once. (The Cluster sends the workers Shutdown.)
  void Shutdown(const std::string& reason);

  // GetModelInfo: replica, state ("waiting_for_workers", "loading", "ready", "failed") and
  // kv_blocks_total (the scheduler adds its own load figures).
  v1::ReplicaInfo Info() const;

 private:
  enum class Phase { kWaiting, kAssigning, kConnecting, kReady, kFailed, kShutdown };
  struct Slot {
    std::shared_ptr<AttachedWorker> worker;
    uint64_t assignment_id = 0;                // of the formation in progress or done
    std::optional<v1::Prepared> prepared;      // this formation's
    bool ready = false;
  };
  struct PendingStep {
    uint64_t step_id = 0;
    std::vector<std::optional<v1::StepResult>> results;  // by rank
    int received = 0;
    absl::Status status;  // set when the group failed during the step
  };

  // "replica 0, rank 1 (tp_rank 1, stage 0), worker w3 (10.0.0.3:7001)".
  std::string SlotName(int rank) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int n_filled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `worker` holds slot `rank` and `assignment_id` (if not 0) is its current one.
  bool Holds(int rank, const AttachedWorker* worker, uint64_t assignment_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartFormation() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendConnect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the epoch or the formation: fails the step in flight, resets the survivors, schedules
  // a re-formation. No-op unless assigning, connecting or ready.
  void Fail(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends which worker owns each listener address `message` mentions (communicator errors
  // name peers by address).
  std::string NamePeers(const std::string& message) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ExecutorState StateLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetMetricsReady(bool ready) const;

  const int replica_;
  const Plan plan_;
  const ReplicaGroupOptions options_;
  std::atomic<uint64_t>* const assignment_ids_;
  const int sampler_rank_;  // last stage, tp_rank 0

  mutable absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kWaiting;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t kv_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::string shutdown_reason_ ABSL_GUARDED_BY(mu_);
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time formation_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::optional<PendingStep> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_REPLICA_GROUP_H_
