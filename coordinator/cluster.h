// Cluster: the coordinator's side of the worker protocol (proto/tessera/v1/worker.proto). It
// serves tessera.v1.Coordinator/Attach, keeps the registry of attached workers, places them in
// the slots of `replicas` replica groups of TP x PP ranks (coordinator/replica_group.h) and
// hands those groups to the scheduler as StepExecutors.
//
// Placement: a worker that registers fills the first vacant rank of the lowest replica group
// that has one; with no vacancy it waits as a spare and fills the first vacancy that appears
// (oldest spare first). Workers keep their slots for their whole life. The layout (every
// rank's shard) is computed once by the planner at Create().
//
// Registration is refused (CoordinatorMessage.refused, then the stream ends with that status)
// for a version other than the coordinator's (FAILED_PRECONDITION), an id that is already
// attached (ALREADY_EXISTS), an empty id (INVALID_ARGUMENT) or a coordinator shutting down
// (UNAVAILABLE).
//
// Use: Create(), register it on a gRPC server (StartGrpcServer, next to the public service),
// give the scheduler executors(); at exit call Shutdown() BEFORE the server's Shutdown() (an
// Attach handler waits for its worker until the cluster lets it go), and destroy the cluster
// after the server.
//
// Thread-safety: thread-safe.
#ifndef TESSERA_COORDINATOR_CLUSTER_H_
#define TESSERA_COORDINATOR_CLUSTER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/cluster_worker.h"
#include "coordinator/replica_group.h"
#include "coordinator/step_executor.h"
#include "metrics/metrics.h"
#include "model/config.h"
#include "sharding/planner.h"
#include "sharding/weight_types.h"
#include "tessera/v1/generate.pb.h"
#include "tessera/v1/worker.grpc.pb.h"

namespace tessera {

struct ClusterOptions {
  std::string model_path;   // sent to the workers in each Assignment
  ModelConfig config;       // LoadModelConfig(file)
  WeightTypes weight_types; // WeightTypesFromFile(file, config)
  int tp = 1, pp = 1, replicas = 1;
  int kv_block_tokens = 16;
  int64_t kv_cache_bytes = 0;  // each worker's KV budget; 0 = the worker's default
  // Only tp/pp are taken from the fields above; context_tokens and batch weigh the KV cache in
  // the planner's balancing of pipeline stages.
  PlanOptions plan_options;
  absl::Duration communicator_timeout = absl::Seconds(30);  // per Communicator operation
  absl::Duration step_timeout = absl::Seconds(60);   // Execute gives up (UNAVAILABLE) after it
  absl::Duration formation_timeout = absl::Minutes(10);  // Assignment -> every rank Ready
  absl::Duration retry_delay = absl::Seconds(1);  // re-forming with the same workers after a
                                                  // failure; doubles up to 30 s
  std::string version;                  // a worker's Register.version must equal it
  CoordinatorMetrics* metrics = nullptr;  // not owned; may be null
};

class Cluster final : public v1::Coordinator::Service {
 public:
  // Plans the layout; refuses an impossible one (InvalidArgument with the planner's reason) and
  // bad options (naming the field and value).
  static absl::StatusOr<std::unique_ptr<Cluster>> Create(ClusterOptions options);
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  ~Cluster() override;  // Shutdown("coordinator stopped")

  // tessera.v1.Coordinator/Attach: one stream per worker for its whole life.
  grpc::Status Attach(grpc::ServerContext* context, AttachStream* stream) override;

  const Plan& plan() const { return plan_; }
  int replicas() const { return static_cast<int>(groups_.size()); }
  // The replica groups, by replica index, for the scheduler (owned by the cluster).
  StepExecutor* executor(int replica) { return groups_[replica].get(); }
  std::vector<StepExecutor*> executors();
  int ready_replicas() const;

  // GetModelInfo parts: one ReplicaInfo per group (replica, state, kv_blocks_total; the
  // scheduler adds blocks used, running and waiting), and one WorkerInfo per attached worker
  // (by replica and rank; spares last with replica = rank = tp_rank = pp_stage = -1).
  std::vector<v1::ReplicaInfo> ReplicaInfos() const;
  std::vector<v1::WorkerInfo> WorkerInfos() const;
  // Sets tensor_parallel, pipeline_parallel, replicas, ready_replicas, kv_block_tokens,
  // replica_info and workers of `info` (the model fields are the service's).
  void FillModelInfo(v1::ModelInfo* info) const;

  // Sends Shutdown(reason) to every worker, fails an Execute in flight (UNAVAILABLE), makes
  // WaitReady return, refuses later registrations, and lets the Attach handlers return (a
  // worker that has not closed its stream within a couple of seconds is cancelled).
  // Idempotent; returns once every handler has returned (or after ~5 s).
  void Shutdown(const std::string& reason);

 private:
  struct Entry {
    std::shared_ptr<AttachedWorker> worker;
    int replica = -1, rank = -1;  // -1: a spare
    uint64_t order = 0;           // registration order (spares fill vacancies oldest first)
  };

  Cluster(ClusterOptions options, Plan plan);

  // Why a registration is refused (OK if it is accepted).
  absl::Status CheckRegister(const v1::Register& reg) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves spares into vacant slots (lowest replica, lowest rank, oldest spare first).
  void FillVacancies() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Routes one message of a registered worker to its group.
  void Dispatch(const std::shared_ptr<AttachedWorker>& worker, const v1::WorkerMessage& msg);
  void Gone(const std::shared_ptr<AttachedWorker>& worker);
  void TickLoop();

  const ClusterOptions options_;
  const Plan plan_;
  std::atomic<uint64_t> assignment_ids_{0};
  std::vector<std::unique_ptr<ReplicaGroup>> groups_;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);  // by worker id
  uint64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
  int handlers_ ABSL_GUARDED_BY(mu_) = 0;  // Attach handlers running
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;  // formation timeouts and re-formation retries
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_CLUSTER_H_
