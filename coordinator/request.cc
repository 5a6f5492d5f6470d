#include "coordinator/request.h"

#include <utility>

namespace tessera {

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "unfinished";
  }
}

void RequestStream::Push(v1::GenerateResponse message) {
  absl::MutexLock lock(&mu_);
  if (finished_.has_value()) return;
  queue_.push_back(std::move(message));
}

void RequestStream::Finish(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (!finished_.has_value()) finished_ = std::move(status);
}

bool RequestStream::cancelled() const {
  absl::MutexLock lock(&mu_);
  return !cancelled_.ok();
}

absl::Status RequestStream::cancel_reason() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

RequestStream::Event RequestStream::Next(absl::Duration timeout, v1::GenerateResponse* message,
                                         absl::Status* status) {
  absl::MutexLock lock(&mu_);
  auto has_event = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || finished_.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&has_event), timeout);
  if (!queue_.empty()) {
    *message = std::move(queue_.front());
    queue_.pop_front();
    return Event::kMessage;
  }
  if (finished_.has_value()) {
    *status = *finished_;
    return Event::kFinished;
  }
  return Event::kTimeout;
}

void RequestStream::Cancel(absl::Status reason) {
  absl::MutexLock lock(&mu_);
  if (cancelled_.ok() && !reason.ok()) cancelled_ = std::move(reason);
}

}  // namespace tessera
