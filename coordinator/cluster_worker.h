// AttachedWorker: the coordinator's end of one worker's Attach stream (worker.proto), from its
// Register to the end of the stream.
//
// gRPC sync streams allow one Read and one Write at a time. The Attach handler thread is the
// only reader; every write goes through Send(), which queues the message and returns at once,
// and one writer thread per worker writes the queue in order. So messages to one worker keep
// the order in which they were queued (callers that need an order across threads queue under
// their own lock), and no caller ever blocks on a worker that does not read.
//
// Thread-safety: all methods are thread-safe. The handler that owns the stream must call
// Close() before it returns (the writer must stop using the stream first).
#ifndef TESSERA_COORDINATOR_CLUSTER_WORKER_H_
#define TESSERA_COORDINATOR_CLUSTER_WORKER_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/sync_stream.h"
#include "tessera/v1/worker.pb.h"

namespace tessera {

using AttachStream = grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>;

class AttachedWorker {
 public:
  // Starts the writer thread. `context` and `stream` belong to the Attach handler and must
  // outlive Close().
  AttachedWorker(v1::Register registration, grpc::ServerContext* context, AttachStream* stream);
  AttachedWorker(const AttachedWorker&) = delete;
  AttachedWorker& operator=(const AttachedWorker&) = delete;
  ~AttachedWorker();  // Close()

  const std::string& id() const { return reg_.worker_id(); }
  const v1::Register& registration() const { return reg_; }
  // "worker w3 (10.0.0.3:7001)": how messages name it.
  std::string name() const;

  // Queues a message (dropped once the stream is closed or a write failed).
  void Send(std::shared_ptr<const v1::CoordinatorMessage> message);
  void Send(v1::CoordinatorMessage message);

  // Waits until every queued message is written (or can no longer be), or `timeout` passes.
  // True if the queue drained.
  bool Flush(absl::Duration timeout);

  // Cancels the call: a blocked Read or Write on it returns, and the worker sees CANCELLED.
  // Safe from any thread at any time: a no-op once Close() has returned.
  void Cancel();

  // Stops the writer (messages still queued are dropped), joins it and lets go of the stream.
  // Idempotent.
  void Close();

  // Memory the worker reported in its last Ready.
  void set_memory(const v1::MemoryUsage& memory);
  v1::MemoryUsage memory() const;

 private:
  void WriteLoop();

  const v1::Register reg_;
  grpc::ServerContext* const context_;
  AttachStream* const stream_;

  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<const v1::CoordinatorMessage>> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // a message is being written
  bool closed_ ABSL_GUARDED_BY(mu_) = false;   // Close() called or a write failed
  bool detached_ ABSL_GUARDED_BY(mu_) = false; // Close() returned: the stream may be gone
  v1::MemoryUsage memory_ ABSL_GUARDED_BY(mu_);
  std::thread writer_;
};

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_CLUSTER_WORKER_H_
