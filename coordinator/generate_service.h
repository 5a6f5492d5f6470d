// GenerateService: tessera.v1.Tessera (proto/tessera/v1/generate.proto), the public API of a
// coordinator, on gRPC's synchronous server API.
//
// Generate: validate and tokenize (coordinator/prepare_request.h; INVALID_ARGUMENT naming the
// field), route to the least-loaded ready replica (fewest waiting + running sequences, then the
// emptiest KV cache; UNAVAILABLE listing every replica's state when none is ready; a replica
// whose queue is full passes the request on to the next, RESOURCE_EXHAUSTED when all are
// full), then drain the request's RequestStream into the client's stream on the RPC thread. The
// RPC thread polls the client every poll_interval: a client that goes away (or a failed write)
// cancels the stream with CANCELLED, a passed deadline with DEADLINE_EXCEEDED; the scheduler
// drops the sequence and frees its KV blocks at its next step.
//
// Replicas are seen through two functions each (submit, load), so the service knows nothing of
// how a scheduler batches or where its workers are; cli/coordinator wires them to the
// schedulers and the layout part of GetModelInfo to the Cluster.
//
// Thread-safety: all RPCs may run concurrently; the options are fixed at construction.
#ifndef TESSERA_COORDINATOR_GENERATE_SERVICE_H_
#define TESSERA_COORDINATOR_GENERATE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "coordinator/prepare_request.h"
#include "coordinator/request.h"
#include "coordinator/scheduler.h"
#include "coordinator/served_model.h"
#include "metrics/metrics.h"
#include "tessera/v1/generate.grpc.pb.h"

namespace tessera {

// One replica's load as its scheduler sees it (the service routes by ready, waiting, running
// and the KV blocks, and reports them in GetModelInfo).
using ReplicaLoad = SchedulerLoad;

// A replica as the service routes to it.
struct ServiceReplica {
  // Queues a request; RESOURCE_EXHAUSTED when the queue is full (or the prompt can never fit),
  // UNAVAILABLE when the replica is not ready. Must not block for long.
  std::function<absl::Status(ScheduledRequest)> submit;
  std::function<ReplicaLoad()> load;
};

struct GenerateServiceOptions {
  PrepareOptions prepare;
  absl::Duration poll_interval = absl::Milliseconds(20);  // client cancellation checks
  // Fills the layout part of GetModelInfo (tensor_parallel, pipeline_parallel, replicas,
  // ready_replicas, kv_block_tokens, replica_info with states, workers): Cluster::FillModelInfo.
  // When null the service describes its replicas alone as TP = PP = 1.
  std::function<void(v1::ModelInfo*)> fill_cluster_info;
  int kv_block_tokens = 16;               // reported when fill_cluster_info does not set it
  CoordinatorMetrics* metrics = nullptr;  // not owned; may be null
};

class GenerateService final : public v1::Tessera::Service {
 public:
  // `model` must outlive the service.
  GenerateService(const ServedModel& model, std::vector<ServiceReplica> replicas,
                  GenerateServiceOptions options);
  GenerateService(const GenerateService&) = delete;
  GenerateService& operator=(const GenerateService&) = delete;

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

  // The ModelInfo GetModelInfo answers (also for in-process callers such as `serve`).
  v1::ModelInfo ModelInfo() const;

  // Submits to the least-loaded ready replica (see the file comment).
  absl::Status Route(ScheduledRequest request);

 private:
  // Streams `stream` to the client until it finishes, the client goes away or the deadline
  // passes. Records metrics. Returns the RPC's status.
  grpc::Status Drain(grpc::ServerContext* context, RequestStream& stream,
                     grpc::ServerWriter<v1::GenerateResponse>* writer,
                     const std::string& request_id);
  void RecordOutcome(const absl::Status& status) const;

  const ServedModel& model_;
  const std::vector<ServiceReplica> replicas_;
  const GenerateServiceOptions options_;
  std::atomic<uint64_t> next_request_{0};
  std::atomic<uint64_t> route_turn_{0};  // rotates the first choice among equally loaded
  const uint64_t id_prefix_;             // random per service, so request ids differ across runs
};

// The gRPC status for an absl status (same code, same message).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_GENERATE_SERVICE_H_
