// NcclCommunicator: the Communicator (worker/communicator.h) over NCCL, on device buffers of
// one GPU. Built only when CUDA and NCCL are both present (worker/CMakeLists.txt defines
// TESSERA_HAVE_NCCL then).
//
// Bootstrap: rank 0 calls NewUniqueId() and the coordinator hands those 128 bytes to every rank
// of the group during shard assignment; each rank then calls Create with its rank.
//
// Every operation is enqueued on the communicator's own stream and then waited for by polling
// (cudaStreamQuery and ncclCommGetAsyncError) against the per-operation deadline; the
// communicator is created non-blocking, so a dead peer turns into DEADLINE_EXCEEDED (the
// communicator is aborted, later calls fail with FAILED_PRECONDITION quoting the first error),
// never a hang. The caller's compute stream must have finished writing a buffer before it is
// passed in (the CUDA backend synchronises at its CopyToHost; the engine's hooks call in
// between steps of one thread).
//
// Bit-identical results across ranks: NCCL's ring and tree all-reduce give every rank the same
// reduced values. Size or order mismatches between ranks are not detected by NCCL; they show
// up as a timeout or wrong data.
//
// Thread-safety: operations are serialised by an internal mutex.
#ifndef TESSERA_WORKER_NCCL_COMMUNICATOR_H_
#define TESSERA_WORKER_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "worker/communicator.h"

struct ncclComm;     // ncclComm_t
struct CUstream_st;  // cudaStream_t

namespace tessera {

class NcclCommunicator final : public Communicator {
 public:
  // A fresh NCCL unique id (ncclGetUniqueId), 128 opaque bytes.
  static absl::StatusOr<std::string> NewUniqueId();

  // Joins the group `unique_id` names as `rank` of `size`, on GPU `device`. Waits at most
  // `timeout` for every rank to join.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(absl::string_view unique_id,
                                                                  int rank, int size, int device,
                                                                  absl::Duration timeout);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void set_timeout(absl::Duration per_operation) override;
  absl::Duration timeout() const override;

  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* local, int64_t n_local, float* out) override;
  absl::Status AllGatherV(const float* local, absl::Span<const int64_t> counts,
                          float* out) override;
  absl::Status Send(int peer, const float* data, int64_t n) override;
  absl::Status Recv(int peer, float* data, int64_t n) override;
  absl::Status Barrier() override;

 private:
  NcclCommunicator(int rank, int size, int device, absl::Duration timeout)
      : rank_(rank), size_(size), device_(device), timeout_(timeout) {}

  // Runs `enqueue` (NCCL calls on stream_) and waits for it against the deadline. `what`
  // names the operation in errors ("all-reduce of 4096 floats").
  template <class Enqueue>
  absl::Status Run(const std::string& what, Enqueue enqueue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Polls until the communicator's pending work is enqueued/complete, an error, or deadline.
  absl::Status Wait(const std::string& what, absl::Time deadline, bool stream_too)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Fail(absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int rank_;
  const int size_;
  const int device_;
  mutable absl::Mutex mu_;
  absl::Duration timeout_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  ncclComm* comm_ = nullptr;
  CUstream_st* stream_ = nullptr;
  float* barrier_word_ = nullptr;  // one device float for Barrier's all-reduce
};

}  // namespace tessera

#endif  // TESSERA_WORKER_NCCL_COMMUNICATOR_H_
