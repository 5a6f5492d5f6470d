// TcpCommunicator: a Communicator over plain TCP sockets (host buffers), for CPU workers and
// for any network. No dependency beyond POSIX sockets.
//
// Group formation: rank r listens on addresses[r]; every rank connects to each lower rank and
// accepts each higher one (a full mesh of size*(size-1)/2 connections), retrying refused
// connections until the connect deadline, so ranks may start in any order. Each connection
// opens with a handshake (magic, protocol version, group id, group size, sender and receiver
// ranks); the acceptor answers OK or a reason. A connection from another group, of another
// size or meant for another rank is refused with that reason (the connecting rank fails with
// FAILED_PRECONDITION quoting it; the accepting rank keeps waiting for its real peers and, if
// they never come, names the refused connections in its DEADLINE_EXCEEDED).
//
// Framing: every message is a 24-byte header (magic, operation kind, per-link sequence number,
// payload bytes; little-endian as all supported hosts are) followed by the payload of raw
// floats. The receiver checks the kind, the sequence number and the length, so ranks that call
// collectives in different orders or with different sizes get an INTERNAL error naming the
// peer and both operations instead of silently mixing data.
//
// AllReduceSum is a ring reduce-scatter followed by a ring all-gather (each rank sends and
// receives 2 (size-1)/size of the data: bandwidth-optimal for large n). The vector is cut into
// size nearly equal chunks (some empty when n < size). Chunk c is summed in one fixed order
// (rank c+1, c+2, ..., c) on its way around the ring and then copied, so every rank gets
// bit-identical sums. Sends and receives of a ring step run concurrently on non-blocking
// sockets, so no step can deadlock on full socket buffers.
//
// Thread-safety: operations are serialized by an internal mutex (see communicator.h for the
// ordering contract). Not copyable; the destructor closes every connection.
#ifndef TESSERA_WORKER_TCP_COMMUNICATOR_H_
#define TESSERA_WORKER_TCP_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "worker/communicator.h"
#include "worker/tcp_mesh.h"
#include "worker/tcp_socket.h"

namespace tessera {

class TcpCommunicator final : public Communicator {
 public:
  // Listens on addresses[rank] and forms the group.
  static absl::StatusOr<std::unique_ptr<TcpCommunicator>> Create(const TcpGroupOptions& options);
  // Forms the group on a listener the caller bound already (e.g. on port 0, whose real port it
  // then published as addresses[rank]). The listener is closed once the mesh is formed.
  static absl::StatusOr<std::unique_ptr<TcpCommunicator>> Create(
      const TcpGroupOptions& options, std::unique_ptr<TcpListener> listener);

  TcpCommunicator(const TcpCommunicator&) = delete;
  TcpCommunicator& operator=(const TcpCommunicator&) = delete;
  ~TcpCommunicator() override = default;

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(addresses_.size()); }
  void set_timeout(absl::Duration per_operation) override;
  absl::Duration timeout() const override;

  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllGather(const float* local, int64_t n_local, float* out) override;
  absl::Status AllGatherV(const float* local, absl::Span<const int64_t> counts,
                          float* out) override;
  absl::Status Send(int peer, const float* data, int64_t n) override;
  absl::Status Recv(int peer, float* data, int64_t n) override;
  absl::Status Barrier() override;

  // Operation kinds carried in each frame header.
  enum class Op : uint16_t { kAllReduce = 1, kAllGather = 2, kSendRecv = 3, kBarrier = 4 };

 private:
  struct Peer {
    ScopedFd fd;                          // invalid for this rank itself
    uint64_t send_seq = 0, recv_seq = 0;  // frames sent to / received from this peer
  };
  struct Transfer;

  TcpCommunicator(const TcpGroupOptions& options, std::vector<Peer> peers)
      : group_id_(options.group_id),
        rank_(options.rank),
        addresses_(options.addresses),
        peers_(std::move(peers)),
        timeout_(options.timeout) {}

  // "rank 2 (10.0.0.3:7000)".
  std::string PeerName(int peer) const;
  // Runs the sends and receives concurrently until all finish or the deadline passes; at most
  // one send and one receive per peer.
  absl::Status RunTransfers(std::vector<Transfer>& transfers, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wraps an operation: refuses to run on a broken communicator, breaks it on failure and
  // prefixes the error with the group, rank and operation.
  absl::Status Finish(absl::Status s, const char* op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckUsable(const char* op) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RingAllReduce(float* data, int64_t n, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RingAllGatherV(const float* local, absl::Span<const int64_t> counts, float* out,
                              absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string group_id_;
  const int rank_;
  const std::vector<std::string> addresses_;  // "host:port" of every rank
  mutable absl::Mutex mu_;
  std::vector<Peer> peers_ ABSL_GUARDED_BY(mu_);
  absl::Duration timeout_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);         // first failure; OK while usable
  std::vector<float> scratch_ ABSL_GUARDED_BY(mu_);  // incoming reduce-scatter chunk
};

}  // namespace tessera

#endif  // TESSERA_WORKER_TCP_COMMUNICATOR_H_
