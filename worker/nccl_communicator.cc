#include "worker/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tessera {
namespace {

absl::Status NcclStatus(ncclResult_t r, const std::string& what, ncclComm_t comm) {
  const char* last = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  const std::string message = absl::StrCat("NCCL ", what, " failed: ", ncclGetErrorString(r),
                                           last != nullptr && *last ? absl::StrCat(" (", last, ")")
                                                                    : std::string());
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    case ncclRemoteError:
    case ncclSystemError:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CudaStatus(cudaError_t e, const std::string& what) {
  return absl::InternalError(
      absl::StrCat("CUDA ", what, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

// Short sleeps between polls: latency matters for the small per-layer all-reduces.
void Pause(int polls) {
  if (polls < 1000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

absl::StatusOr<std::string> NcclCommunicator::NewUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return NcclStatus(r, "ncclGetUniqueId", nullptr);
  return std::string(id.internal, sizeof id.internal);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    absl::string_view unique_id, int rank, int size, int device, absl::Duration timeout) {
  if (unique_id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id must be ", NCCL_UNIQUE_ID_BYTES,
                                                   " bytes, got ", unique_id.size()));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", size, " is invalid"));
  }
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(rank, size, device, timeout));
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    return CudaStatus(e, absl::StrCat("cudaSetDevice(", device, ")"));
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return CudaStatus(e, "cudaStreamCreateWithFlags");
  }
  c->stream_ = stream;
  void* word = nullptr;
  if (cudaError_t e = cudaMalloc(&word, sizeof(float)); e != cudaSuccess) {
    return CudaStatus(e, "cudaMalloc of the barrier word");
  }
  c->barrier_word_ = static_cast<float*>(word);

  ncclUniqueId id;
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return at once; we poll against our own deadline
  ncclComm_t comm = nullptr;
  absl::MutexLock lock(&c->mu_);
  const std::string what = absl::StrCat("init of rank ", rank, " of ", size, " on cuda:", device);
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  c->comm_ = comm;
  if (r != ncclSuccess && r != ncclInProgress) return NcclStatus(r, what, comm);
  if (absl::Status s = c->Wait(what, absl::Now() + timeout, false); !s.ok()) return s;
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  if (comm_ != nullptr) {
    // A healthy communicator is finalized (flushing its work) and destroyed; a broken one can
    // only be aborted.
    bool healthy;
    {
      absl::MutexLock lock(&mu_);
      healthy = broken_.ok();
    }
    if (healthy && ncclCommFinalize(comm_) == ncclSuccess) {
      ncclResult_t state = ncclInProgress;
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress &&
             absl::Now() < deadline) {
        std::this_thread::yield();
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    } else {
      ncclCommAbort(comm_);
    }
  }
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void NcclCommunicator::set_timeout(absl::Duration per_operation) {
  absl::MutexLock lock(&mu_);
  timeout_ = per_operation;
}

absl::Duration NcclCommunicator::timeout() const {
  absl::MutexLock lock(&mu_);
  return timeout_;
}

absl::Status NcclCommunicator::Fail(absl::Status s) {
  if (broken_.ok()) {
    broken_ = s;
    if (comm_ != nullptr) ncclCommAbort(comm_);  // peers blocked on us fail promptly
    comm_ = nullptr;
  }
  return s;
}

absl::Status NcclCommunicator::Wait(const std::string& what, absl::Time deadline,
                                    bool stream_too) {
  for (int polls = 0;; ++polls) {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
    if (r != ncclSuccess) return Fail(NcclStatus(r, what, comm_));
    if (async != ncclSuccess && async != ncclInProgress) {
      return Fail(NcclStatus(async, what, comm_));
    }
    if (async == ncclSuccess) {
      if (!stream_too) return absl::OkStatus();
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return Fail(CudaStatus(e, what));
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          "NCCL ", what, " on rank ", rank_, " of ", size_,
          " did not complete within the timeout: a peer is dead, stuck or issued a different "
          "operation; the communicator is aborted")));
    }
    Pause(polls);
  }
}

template <class Enqueue>
absl::Status NcclCommunicator::Run(const std::string& what, Enqueue enqueue) {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL communicator is broken by an earlier error: ", broken_.message()));
  }
  const absl::Time deadline = absl::Now() + timeout_;
  if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
    return Fail(CudaStatus(e, "cudaSetDevice"));
  }
  const ncclResult_t r = enqueue(comm_, stream_);
  if (r != ncclSuccess && r != ncclInProgress) return Fail(NcclStatus(r, what, comm_));
  return Wait(what, deadline, true);
}

absl::Status NcclCommunicator::AllReduceSum(float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  if (n <= 0) return absl::OkStatus();
  return Run(absl::StrCat("all-reduce of ", n, " floats"), [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, c, s);
  });
}

absl::Status NcclCommunicator::AllGather(const float* local, int64_t n_local, float* out) {
  absl::MutexLock lock(&mu_);
  if (n_local <= 0) return absl::OkStatus();
  return Run(absl::StrCat("all-gather of ", n_local, " floats per rank"),
             [&](ncclComm_t c, cudaStream_t s) {
               return ncclAllGather(local, out, static_cast<size_t>(n_local), ncclFloat32, c, s);
             });
}

absl::Status NcclCommunicator::AllGatherV(const float* local, absl::Span<const int64_t> counts,
                                          float* out) {
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(counts.size()) != size_) {
    return absl::InvalidArgumentError(absl::StrCat("AllGatherV: ", counts.size(),
                                                   " counts for a group of ", size_));
  }
  // One broadcast per rank, fused into a group: rank r's block lands at its offset everywhere.
  return Run("all-gather-v", [&](ncclComm_t c, cudaStream_t s) {
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess) return r;
    int64_t offset = 0;
    for (int root = 0; root < size_; ++root) {
      if (counts[root] > 0) {
        const float* send = root == rank_ ? local : out + offset;
        r = ncclBroadcast(send, out + offset, static_cast<size_t>(counts[root]), ncclFloat32, root,
                          c, s);
        if (r != ncclSuccess && r != ncclInProgress) break;
      }
      offset += counts[root];
    }
    const ncclResult_t end = ncclGroupEnd();
    return r != ncclSuccess && r != ncclInProgress ? r : end;
  });
}

absl::Status NcclCommunicator::Send(int peer, const float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("Send to invalid peer ", peer));
  }
  if (n <= 0) return absl::OkStatus();
  return Run(absl::StrCat("send of ", n, " floats to rank ", peer),
             [&](ncclComm_t c, cudaStream_t s) {
               return ncclSend(data, static_cast<size_t>(n), ncclFloat32, peer, c, s);
             });
}

absl::Status NcclCommunicator::Recv(int peer, float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("Recv from invalid peer ", peer));
  }
  if (n <= 0) return absl::OkStatus();
  return Run(absl::StrCat("receive of ", n, " floats from rank ", peer),
             [&](ncclComm_t c, cudaStream_t s) {
               return ncclRecv(data, static_cast<size_t>(n), ncclFloat32, peer, c, s);
             });
}

absl::Status NcclCommunicator::Barrier() {
  absl::MutexLock lock(&mu_);
  return Run("barrier", [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum, c, s);
  });
}

}  // namespace tessera
