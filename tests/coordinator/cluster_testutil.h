// A scripted worker for cluster tests: a gRPC client of Coordinator/Attach on its own thread
// that plays the worker side of worker.proto with a real Engine and StepRunner on a shared
// WeightSource (TCP communicators on loopback for TP/PP), and fails on cue: Failed for its
// first Assignments, an error StepResult, silence, or a crash (the stream cancelled and its
// communicators closed, like a killed process).
#ifndef TESSERA_TESTS_COORDINATOR_CLUSTER_TESTUTIL_H_
#define TESSERA_TESTS_COORDINATOR_CLUSTER_TESTUTIL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "model/weights.h"
#include "tessera/v1/worker.pb.h"

namespace tessera::testing_util {

struct FakeWorkerOptions {
  std::string coordinator;  // "127.0.0.1:PORT"
  std::string id;
  std::string version;
  const WeightSource* weights = nullptr;  // shared by every fake worker; must outlive them
  int64_t kv_budget_bytes = 1 << 20;      // its KV capacity is what this holds of its shard
  int fail_assignments = 0;               // answer Failed to this many first Assignments
  uint64_t fail_step = 0;                 // answer this step_id with an INTERNAL error (once)
  uint64_t die_at_step = 0;               // crash when this step_id arrives
  uint64_t silent_at_step = 0;            // never answer this step_id
};

class FakeWorker {
 public:
  explicit FakeWorker(FakeWorkerOptions options);
  FakeWorker(const FakeWorker&) = delete;
  FakeWorker& operator=(const FakeWorker&) = delete;
  ~FakeWorker();  // Kill() and join

  // Crashes: cancels the Attach stream and drops the engine and communicators.
  void Kill();
  // Waits until the worker's stream has ended; false after `timeout`.
  bool WaitFinished(absl::Duration timeout);

  // What it saw.
  std::vector<v1::Assignment> assignments() const;
  int resets() const;
  bool got_shutdown() const;
  std::optional<v1::Failed> refused() const;
  grpc::Status final_status() const;  // once finished

 private:
  struct Rank;
  void Run();

  const FakeWorkerOptions options_;
  grpc::ClientContext context_;
  mutable absl::Mutex mu_;
  std::vector<v1::Assignment> assignments_ ABSL_GUARDED_BY(mu_);
  int resets_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v1::Failed> refused_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tessera::testing_util

#endif  // TESSERA_TESTS_COORDINATOR_CLUSTER_TESTUTIL_H_
