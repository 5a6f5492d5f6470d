// Worker: the runtime of one worker process (`tessera worker`). It dials the
// coordinator, keeps one Attach stream (proto/tessera/v1/worker.proto) for its
// life and plays the worker's side of that protocol:
//
//   Register (id, address of its own gRPC server, device, memory, threads,
//   version) Assignment -> opens the GGUF (kept open across assignments of the
//   same path), checks the
//                 shard, binds its two TCP listeners, answers Prepared
//                 (listener addresses, the KV blocks its budget holds for the
//                 shard) or Failed
//   Connect    -> forms the tensor-group and pipeline TcpCommunicators
//   concurrently, loads its
//                 shard into an Engine with exactly Connect.kv_blocks KV
//                 blocks, answers Ready (memory, load time) or Failed
//   Step       -> StepRunner (worker/step_runner.h); an error becomes
//   StepResult.code/message
//                 and the worker drops its group at once (so peers blocked in a
//                 collective fail promptly); the stream stays up
//   Reset      -> drops engine and communicators, stays registered
//   Shutdown   -> Run() returns OK;   refused -> Run() returns the refusal
//
// A broken stream (coordinator gone) drops the group and re-registers with the
// same id, retrying with backoff for options.reconnect_timeout; a refusal with
// ALREADY_EXISTS while re-registering (the coordinator has not yet noticed the
// old stream died) is retried too.
//
// Several Workers can run in one process (tests do), each Run() on its own
// thread.
//
// Thread-safety: Run() once, from one thread; Stop(), id() and address() from
// any thread. Messages are handled one at a time on Run()'s thread, so Stop()
// takes effect at once while the worker waits for messages and at the end of
// the message in hand otherwise (a collective or a mesh formation waits at most
// its communicator timeout).
#ifndef TESSERA_WORKER_WORKER_H_
#define TESSERA_WORKER_WORKER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"
#include "tessera/v1/worker.pb.h"
#include "worker/grpc_server.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace tessera {

class AssignedShard;
struct OpenedModel;

// What Register.version says; the coordinator refuses workers of another
// version.
inline constexpr char kWorkerProtocolVersion[] = "0.1.0";

struct WorkerOptions {
  std::string coordinator;           // "host:port" of the coordinator (required)
  std::string listen = "0.0.0.0:0";  // this worker's gRPC server (health, reflection)
  // Host the peers use to reach this worker's TCP listeners (and
  // Register.address). "": the coordinator's host when that is a loopback
  // address, else this machine's hostname.
  std::string advertise_host;
  std::string id;              // "": "hostname:pid", and "hostname:pid:N" for the N-th in a process
  std::string model_path;      // "": the path each Assignment names
  std::string device = "cpu";  // "cpu" or "cuda:N" (see worker/backend_factory.h)
  int threads = 1;             // CPU threads of the backend
  int64_t kv_cache_bytes = int64_t{256} << 20;           // KV budget when an Assignment sets none
  absl::Duration connect_timeout = absl::Seconds(60);    // first registration
  absl::Duration reconnect_timeout = absl::Seconds(60);  // after the stream broke
  WorkerMetrics *metrics = nullptr;                      // not owned; null: not exported
};

class Worker {
 public:
  // Checks the options (naming a bad field), checks that the device can be
  // opened, and starts the worker's own gRPC server.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options);
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;
  ~Worker();  // Stop(); the caller joins the thread that runs Run() first

  // Serves the coordinator until Shutdown (OK), Stop() (OK), a refusal (its
  // status), or the coordinator stays unreachable past the connect/reconnect
  // timeout (UNAVAILABLE naming it).
  absl::Status Run();
  // Ends Run() promptly (see the thread-safety note above). Idempotent.
  void Stop();

  const std::string &id() const { return options_.id; }
  // "host:port" of this worker's gRPC server, as sent in Register.address.
  const std::string &address() const { return address_; }
  // Register.device: the backend's name ("cpu (2 threads)", "cuda:0 (NVIDIA
  // H100 ...)").
  const std::string &device_name() const { return device_name_; }

 private:
  struct Session;
  enum class Outcome { kShutdown, kStopped, kRefused, kBroken };

  Worker(WorkerOptions options, GrpcServer server, std::string address, std::string device_name);

  // One Attach stream from dial to end: waits for the channel until
  // `dial_deadline`, registers (then sets *registered) and handles messages.
  // `error` receives the refusal or the break.
  Outcome Attach(Session &session, absl::Time dial_deadline, bool *registered, absl::Status *error);
  // The replies to Assignment and Connect (Prepared/Ready, or Failed).
  v1::WorkerMessage OnAssignment(const v1::Assignment &a);
  v1::WorkerMessage OnConnect(const v1::Connect &c);
  v1::WorkerMessage OnStep(const v1::Step &s);
  // The model at `path`, opened once and kept while assignments name the same
  // path.
  absl::Status OpenModel(const std::string &path, const std::string &model_sha);
  void DropShard();
  bool stopped() const;
  // Sleeps up to `d`, waking early on Stop(); false if stopped.
  bool Backoff(absl::Duration d);

  const WorkerOptions options_;
  GrpcServer server_;
  const std::string address_;
  const std::string device_name_;

  // Run()'s thread only.
  std::string model_path_;
  std::unique_ptr<OpenedModel> model_;
  std::unique_ptr<AssignedShard> shard_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext *context_ ABSL_GUARDED_BY(mu_) = nullptr;  // the stream in progress
};

}  // namespace tessera

#endif  // TESSERA_WORKER_WORKER_H_
