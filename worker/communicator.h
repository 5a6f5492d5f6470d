// Communicator: the collectives and point-to-point transfers between the ranks of one group of
// workers (a tensor-parallel group, or the stages of a pipeline). Activations move
// worker-to-worker through it, never through the coordinator.
//
// Implementations: TcpCommunicator (worker/tcp_communicator.h, host buffers, loopback or a real
// network) and, with the CUDA backend, an NCCL one (device buffers) behind this same
// interface.
//
// Buffers: every pointer is owned by the caller and must stay valid until the call returns; no
// call keeps a pointer. Which memory they point to is the implementation's contract: host
// memory for TCP, device memory of the communicator's GPU for NCCL.
//
// Ordering and thread-safety: a communicator runs one operation at a time (calls from several
// threads are serialized, never interleaved). Collectives (AllReduceSum, AllGather(V),
// Barrier) must be issued by every rank of the group, in the same order, with the same sizes;
// Send(peer) on one rank pairs with Recv(this rank) on the peer, in order. Implementations
// detect violations they can see (a size or order mismatch) and report them instead of
// corrupting data.
//
// Failures: every operation has a deadline (the communicator's timeout, counted from the
// call): a peer that is dead or stuck gives DEADLINE_EXCEEDED, one that disconnects gives
// UNAVAILABLE, both naming the peer. After any failed operation the communicator is broken
// (the ranks no longer agree on the stream): it drops its links, so the other ranks fail
// promptly too (naming this rank), later calls fail at once with FAILED_PRECONDITION quoting
// the first error, and the group must be formed again.
#ifndef TESSERA_WORKER_COMMUNICATOR_H_
#define TESSERA_WORKER_COMMUNICATOR_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace tessera {

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This rank's index in [0, size()) and the number of ranks in the group.
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Deadline of each later operation, counted from its start (a dead peer surfaces after at
  // most this long).
  virtual void set_timeout(absl::Duration per_operation) = 0;
  virtual absl::Duration timeout() const = 0;

  // Sums `data` (n floats) element-wise across all ranks, in place. Every rank ends with
  // bit-identical results (the summation order does not depend on the rank or on timing).
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;

  // Concatenates every rank's `local` block in rank order into `out` on every rank. AllGather:
  // each rank contributes n_local floats, out holds size() * n_local. AllGatherV: rank r
  // contributes counts[r] floats (counts has size() entries, the same on every rank), out holds
  // their sum; `local` may be out + (counts[0] + ... + counts[rank-1]) (in place), and must not
  // otherwise overlap `out`.
  virtual absl::Status AllGather(const float* local, int64_t n_local, float* out) = 0;
  virtual absl::Status AllGatherV(const float* local, absl::Span<const int64_t> counts,
                                  float* out) = 0;

  // Point-to-point: Send hands n floats to `peer`, which must call Recv(this rank) with the same
  // n. Send may return before the peer has received the data. Two ranks must not Send large
  // buffers to each other at the same time (each would wait for the other to receive).
  virtual absl::Status Send(int peer, const float* data, int64_t n) = 0;
  virtual absl::Status Recv(int peer, float* data, int64_t n) = 0;

  // Returns once every rank of the group has called Barrier.
  virtual absl::Status Barrier() = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_COMMUNICATOR_H_
