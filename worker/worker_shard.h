// AssignedShard: one Assignment's life on a worker (worker.proto), from
// Prepared to Reset.
//
//   Prepare(Assignment)  checks the assignment against the model (shard ranges,
//   ranks, vocab
//                        widths, sampler), binds the tensor-group and pipeline
//                        TCP listeners on port 0 and computes the KV blocks the
//                        budget holds for this shard
//   Connect(Connect)     forms both TcpCommunicators concurrently (every rank
//   forms both at once,
//                        so no order between the groups can deadlock), creates
//                        the backend, the CommunicatorHooks and the Engine with
//                        exactly Connect.kv_blocks blocks
//   Step(Step)           the StepRunner, timed: compute and collective seconds
//
// Groups of one rank get no communicator (the engine's default hooks).
// Collectives are timed by a thin Communicator wrapper
// (WorkerMetrics::Collective and StepResult.collective_seconds).
//
// Thread-safety: one thread at a time. Destruction drops the engine before the
// backend and the communicators (closing their sockets, so peers fail
// promptly).
#ifndef TESSERA_WORKER_WORKER_SHARD_H_
#define TESSERA_WORKER_WORKER_SHARD_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "metrics/metrics.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tessera/v1/worker.pb.h"
#include "worker/communicator.h"
#include "worker/shard_hooks.h"
#include "worker/step_runner.h"
#include "worker/tcp_socket.h"

namespace tessera {

struct ShardContext {
  std::string worker_id;       // names this worker in errors
  std::string device = "cpu";  // CreateBackend's device string
  int threads = 1;
  int64_t default_kv_cache_bytes = int64_t{256} << 20;  // when the Assignment sets none
  std::string bind_host;       // where the listeners bind ("0.0.0.0", "127.0.0.1")
  std::string advertise_host;  // what Prepared publishes with their ports
  WorkerMetrics *metrics = nullptr;
};

class AssignedShard {
 public:
  // `model` must outlive the shard. Errors name the assignment's field and
  // value.
  static absl::StatusOr<std::unique_ptr<AssignedShard>> Prepare(const v1::Assignment &assignment,
                                                                const WeightSource *model,
                                                                const ShardContext &context);
  AssignedShard(const AssignedShard &) = delete;
  AssignedShard &operator=(const AssignedShard &) = delete;
  ~AssignedShard();

  const v1::Assignment &assignment() const { return a_; }
  v1::Prepared prepared() const;

  // Forms the communicators and loads the shard; the Ready to send. Call once.
  absl::StatusOr<v1::Ready> Connect(const v1::Connect &connect);
  bool connected() const { return runner_ != nullptr; }

  // One step on a connected shard. Errors name the worker, rank, step and
  // sequence.
  absl::StatusOr<v1::StepResult> Step(const v1::Step &step);

  // "worker w3 (replica 0, rank 2)".
  const std::string &name() const { return name_; }

 private:
  class TimedCommunicator;

  AssignedShard(v1::Assignment a, const WeightSource *model, ShardContext context, ModelShard shard,
                EngineOptions engine_options, int64_t kv_capacity);

  const v1::Assignment a_;
  const WeightSource *const model_;
  const ShardContext ctx_;
  const ModelShard shard_;
  EngineOptions engine_options_;
  const int64_t kv_capacity_;
  std::string name_;

  std::unique_ptr<TcpListener> tensor_listener_, pipeline_listener_;
  std::string tensor_address_, pipeline_address_;

  // Declaration order is destruction order in reverse: runner, engine, hooks,
  // backend, then the communicators.
  std::unique_ptr<Communicator> tensor_group_, pipeline_;
  std::unique_ptr<TimedCommunicator> timed_tensor_, timed_pipeline_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CommunicatorHooks> hooks_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<StepRunner> runner_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_WORKER_SHARD_H_
