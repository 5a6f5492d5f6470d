// The coordinator as `tessera coordinator` and `tessera serve` run it: the model's metadata,
// the Cluster (workers attach to it), one Scheduler per replica group, the public
// GenerateService, all on ONE gRPC server (tessera.v1.Tessera + tessera.v1.Coordinator + health
// + reflection), and optionally the Prometheus exporter.
//
// Also the process plumbing both commands share: SIGTERM/SIGINT are blocked in every thread
// (BlockTerminationSignals, before any thread starts) and taken synchronously by the main
// thread (WaitForSignal), so shutdown runs in ordinary code, never in a signal handler.
//
// Thread-safety: Start and Shutdown from the main thread; the accessors from any thread.
#ifndef TESSERA_CLI_COORDINATOR_PROCESS_H_
#define TESSERA_CLI_COORDINATOR_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/args.h"

namespace tessera::cli {

struct CoordinatorFlags {
  std::string model;  // "" = DefaultModelPath()
  int64_t tp = 1, pp = 1, replicas = 1;
  std::string host = "0.0.0.0";
  int64_t port = 50051;
  int64_t metrics_port = -1;   // -1: no exporter; 0: any free port
  int64_t kv_cache_bytes = 0;  // per worker; 0 = the worker's default
  int64_t kv_block_tokens = 16;
  int64_t max_waiting = 256;       // queued requests per replica before RESOURCE_EXHAUSTED
  int64_t max_batch_tokens = 512;  // tokens per scheduler step (prefill chunks + decodes)
  int64_t max_running = 64;        // sequences per replica batch
  int64_t default_max_tokens = 256;
  double step_timeout_s = 60;

  // Declares the flags on `args` (serve and coordinator share them).
  void Declare(Args& args);
  absl::Status Validate() const;
};

class CoordinatorProcess {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorProcess>> Start(const CoordinatorFlags& flags);
  virtual ~CoordinatorProcess() = default;

  virtual int port() const = 0;             // the gRPC port bound
  virtual std::string address() const = 0;  // "host:port" as bound
  virtual int metrics_port() const = 0;     // 0 when no exporter
  virtual int ready_replicas() const = 0;
  virtual int replicas() const = 0;
  // "SmolLM2 135M Instruct (Q4_1), TP=2 x PP=2, 1 replica"
  virtual std::string Describe() const = 0;
  // Why replicas are not ready, one line per replica ("replica 0: waiting_for_workers").
  virtual std::string ReplicaStates() const = 0;
  // Stops everything: workers get Shutdown, requests in flight fail UNAVAILABLE, the server
  // stops. Idempotent.
  virtual void Shutdown(const std::string& reason) = 0;
};

// The model path to serve: the flag, else the default model (an error telling to fetch it).
absl::StatusOr<std::string> ResolveModelPath(const std::string& flag);

// Blocks SIGTERM, SIGINT (and SIGCHLD when `with_children`) in the calling thread and every
// thread created after; call first thing in main.
void BlockTerminationSignals(bool with_children);
// Waits up to `timeout` for one of the blocked signals; its number, or 0 on timeout.
int WaitForSignal(absl::Duration timeout);

}  // namespace tessera::cli

#endif  // TESSERA_CLI_COORDINATOR_PROCESS_H_
