#include "coordinator/cluster_worker.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {

AttachedWorker::AttachedWorker(v1::Register registration, grpc::ServerContext* context,
                               AttachStream* stream)
    : reg_(std::move(registration)), context_(context), stream_(stream) {
  writer_ = std::thread([this] { WriteLoop(); });
}

AttachedWorker::~AttachedWorker() { Close(); }

std::string AttachedWorker::name() const {
  return absl::StrCat("worker ", reg_.worker_id(), " (", reg_.address(), ")");
}

void AttachedWorker::Send(std::shared_ptr<const v1::CoordinatorMessage> message) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  queue_.push_back(std::move(message));
}

void AttachedWorker::Send(v1::CoordinatorMessage message) {
  Send(std::make_shared<const v1::CoordinatorMessage>(std::move(message)));
}

bool AttachedWorker::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || (queue_.empty() && !writing_);
  };
  mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
  return queue_.empty() && !writing_;
}

void AttachedWorker::Cancel() {
  absl::MutexLock lock(&mu_);
  if (!detached_) context_->TryCancel();
}

void AttachedWorker::Close() {
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    queue_.clear();
    // A Write blocked on a worker that stopped reading returns once the call is cancelled.
    if (writing_ && !detached_) context_->TryCancel();
  }
  if (writer_.joinable()) writer_.join();
  absl::MutexLock lock(&mu_);
  detached_ = true;
}

void AttachedWorker::set_memory(const v1::MemoryUsage& memory) {
  absl::MutexLock lock(&mu_);
  memory_ = memory;
}

v1::MemoryUsage AttachedWorker::memory() const {
  absl::MutexLock lock(&mu_);
  return memory_;
}

void AttachedWorker::WriteLoop() {
  while (true) {
    std::shared_ptr<const v1::CoordinatorMessage> next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return closed_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (closed_) return;
      next = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
    }
    const bool ok = stream_->Write(*next);
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The call is over; the reader sees the end of the stream and reports the worker gone.
      closed_ = true;
      queue_.clear();
      return;
    }
  }
}

}  // namespace tessera
