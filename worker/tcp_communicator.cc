#include "worker/tcp_communicator.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "worker/tcp_mesh.h"

namespace tessera {
namespace {

// Frame header: u32 magic, u16 op, u16 zero, u64 sequence number, u64 payload bytes.
constexpr uint32_t kFrameMagic = 0x46525354;  // "TSRF"
constexpr size_t kHeaderBytes = 24;

const char* OpName(TcpCommunicator::Op op) {
  switch (op) {
    case TcpCommunicator::Op::kAllReduce:
      return "AllReduceSum";
    case TcpCommunicator::Op::kAllGather:
      return "AllGather";
    case TcpCommunicator::Op::kSendRecv:
      return "Send/Recv";
    case TcpCommunicator::Op::kBarrier:
      return "Barrier";
  }
  return "an unknown operation";
}

absl::Status WithPrefix(const absl::Status& s, const std::string& prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

}  // namespace

struct TcpCommunicator::Transfer {
  int peer = 0;
  bool send = false;
  Op op = Op::kAllReduce;
  char* data = nullptr;  // payload (read-only for sends)
  size_t bytes = 0;
  uint64_t seq = 0;  // this frame's sequence number on its link
  unsigned char header[kHeaderBytes];
  size_t header_done = 0, data_done = 0;
  // Receives only: when set, each float is added into sum_into[i] as soon as it has arrived
  // (while still in cache) instead of in a second pass over the whole chunk.
  float* sum_into = nullptr;
  size_t summed = 0;  // floats already added

  bool done() const { return header_done == kHeaderBytes && data_done == bytes; }
};

absl::StatusOr<std::unique_ptr<TcpCommunicator>> TcpCommunicator::Create(
    const TcpGroupOptions& options) {
  const int n = static_cast<int>(options.addresses.size());
  std::unique_ptr<TcpListener> listener;
  if (n > 1 && options.rank >= 0 && options.rank < n) {
    auto l = TcpListener::Listen(options.addresses[options.rank]);
    if (!l.ok()) {
      return WithPrefix(l.status(),
                        absl::StrCat("group '", options.group_id, "' rank ", options.rank, ": "));
    }
    listener = *std::move(l);
  }
  return Create(options, std::move(listener));
}

absl::StatusOr<std::unique_ptr<TcpCommunicator>> TcpCommunicator::Create(
    const TcpGroupOptions& options, std::unique_ptr<TcpListener> listener) {
  TESSERA_ASSIGN_OR_RETURN(std::vector<ScopedFd> fds, FormTcpMesh(options, listener.get()));
  listener.reset();  // the mesh is complete: later strays are refused by the kernel
  std::vector<Peer> peers(fds.size());
  for (size_t r = 0; r < fds.size(); ++r) peers[r].fd = std::move(fds[r]);
  return std::unique_ptr<TcpCommunicator>(new TcpCommunicator(options, std::move(peers)));
}

void TcpCommunicator::set_timeout(absl::Duration per_operation) {
  absl::MutexLock lock(&mu_);
  timeout_ = per_operation;
}

absl::Duration TcpCommunicator::timeout() const {
  absl::MutexLock lock(&mu_);
  return timeout_;
}

std::string TcpCommunicator::PeerName(int peer) const {
  return absl::StrCat("rank ", peer, " (", addresses_[peer], ")");
}

absl::Status TcpCommunicator::CheckUsable(const char* op) const {
  if (broken_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("group '", group_id_, "' rank ", rank_, ": ", op,
                   " refused: the communicator broke on an earlier error (", broken_.message(),
                   "); the group must be formed again"));
}

absl::Status TcpCommunicator::Finish(absl::Status s, const char* op) {
  if (s.ok()) return s;
  s = WithPrefix(s, absl::StrCat("group '", group_id_, "' rank ", rank_, " ", op, ": "));
  broken_ = s;
  // Close every link: peers blocked on this rank fail at once (UNAVAILABLE) instead of
  // waiting for their own timeouts.
  for (Peer& p : peers_) p.fd.reset();
  return s;
}

absl::Status TcpCommunicator::RunTransfers(std::vector<Transfer>& transfers, absl::Time deadline) {
  // Frame headers of the sends; expected sequence numbers of the receives.
  for (Transfer& t : transfers) {
    Peer& p = peers_[t.peer];
    t.seq = t.send ? p.send_seq++ : p.recv_seq++;
    if (t.send) {
      PutLe(t.header, kFrameMagic, 4);
      PutLe(t.header + 4, static_cast<uint16_t>(t.op), 2);
      PutLe(t.header + 6, 0, 2);
      PutLe(t.header + 8, t.seq, 8);
      PutLe(t.header + 16, t.bytes, 8);
    }
  }
  std::vector<pollfd> pfds;
  std::vector<int> pfd_peer;
  for (;;) {
    pfds.clear();
    pfd_peer.clear();
    for (const Transfer& t : transfers) {
      if (t.done()) continue;
      const auto it = std::find(pfd_peer.begin(), pfd_peer.end(), t.peer);
      const short ev = t.send ? POLLOUT : POLLIN;
      if (it == pfd_peer.end()) {
        pfds.push_back({peers_[t.peer].fd.get(), ev, 0});
        pfd_peer.push_back(t.peer);
      } else {
        pfds[it - pfd_peer.begin()].events |= ev;
      }
    }
    if (pfds.empty()) return absl::OkStatus();
    const int rc = poll(pfds.data(), pfds.size(), PollTimeoutMs(deadline));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    if (rc == 0) {
      if (absl::Now() < deadline) continue;
      std::vector<std::string> waiting;
      for (const Transfer& t : transfers) {
        if (t.done()) continue;
        waiting.push_back(absl::StrCat(t.send ? "sending to " : "receiving from ", PeerName(t.peer),
                                       " (", t.header_done + t.data_done, " of ",
                                       kHeaderBytes + t.bytes, " bytes done)"));
      }
      return absl::DeadlineExceededError(absl::StrCat(
          "timed out after ", absl::FormatDuration(timeout_), " ", absl::StrJoin(waiting, ", "),
          "; is that worker alive and issuing the same operations?"));
    }
    for (size_t i = 0; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      if (pfds[i].revents & POLLNVAL) {
        return absl::InternalError(
            absl::StrCat("the socket of ", PeerName(pfd_peer[i]), " is not open"));
      }
      const int fd = pfds[i].fd;
      for (Transfer& t : transfers) {
        if (t.peer != pfd_peer[i] || t.done()) continue;
        if (t.send && (pfds[i].revents & (POLLOUT | POLLERR | POLLHUP))) {
          // Header and payload in one sendmsg; continue until the socket buffer is full.
          while (!t.done()) {
            iovec iov[2];
            int n_iov = 0;
            if (t.header_done < kHeaderBytes) {
              iov[n_iov++] = {t.header + t.header_done, kHeaderBytes - t.header_done};
            }
            if (t.data_done < t.bytes) iov[n_iov++] = {t.data + t.data_done, t.bytes - t.data_done};
            msghdr msg;
            std::memset(&msg, 0, sizeof(msg));
            msg.msg_iov = iov;
            msg.msg_iovlen = n_iov;
            const ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (w <= 0) {
              return absl::UnavailableError(
                  absl::StrCat("lost the connection to ", PeerName(t.peer),
                               " while sending: ", std::strerror(w < 0 ? errno : EPIPE)));
            }
            size_t left = static_cast<size_t>(w);
            const size_t h = std::min(left, kHeaderBytes - t.header_done);
            t.header_done += h;
            t.data_done += left - h;
          }
        } else if (!t.send && (pfds[i].revents & (POLLIN | POLLERR | POLLHUP))) {
          // The header first (never reading past this frame), then the payload in place.
          while (!t.done()) {
            const bool in_header = t.header_done < kHeaderBytes;
            void* dst = in_header ? static_cast<void*>(t.header + t.header_done)
                                  : static_cast<void*>(t.data + t.data_done);
            const size_t want = in_header ? kHeaderBytes - t.header_done : t.bytes - t.data_done;
            const ssize_t r = recv(fd, dst, want, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (r == 0) {
              return absl::UnavailableError(absl::StrCat(
                  PeerName(t.peer), " closed the connection (", t.header_done + t.data_done, " of ",
                  kHeaderBytes + t.bytes, " bytes of a ", OpName(t.op),
                  " frame received); did that worker exit?"));
            }
            if (r < 0) {
              return absl::UnavailableError(
                  absl::StrCat("lost the connection to ", PeerName(t.peer),
                               " while receiving: ", std::strerror(errno)));
            }
            if (!in_header) {
              t.data_done += static_cast<size_t>(r);
              if (t.sum_into != nullptr) {
                // The payload is float-aligned scratch memory: read it as floats.
                const float* in = reinterpret_cast<const float*>(t.data);
                const size_t ready = t.data_done / sizeof(float);
                for (size_t i = t.summed; i < ready; ++i) t.sum_into[i] = in[i] + t.sum_into[i];
                t.summed = ready;
              }
              continue;
            }
            t.header_done += static_cast<size_t>(r);
            if (t.header_done < kHeaderBytes) continue;
            const uint64_t magic = GetLe(t.header, 4), seq = GetLe(t.header + 8, 8);
            const uint64_t bytes = GetLe(t.header + 16, 8);
            const auto op = static_cast<Op>(GetLe(t.header + 4, 2));
            if (magic != kFrameMagic) {
              return absl::InternalError(
                  absl::StrCat(PeerName(t.peer), " sent a frame with a bad magic number"));
            }
            if (op != t.op || seq != t.seq) {
              return absl::InternalError(
                  absl::StrCat(PeerName(t.peer), " sent frame #", seq, " of ", OpName(op),
                               ", but this rank ", "expected frame #", t.seq, " of ", OpName(t.op),
                               ": the ranks issued operations in different orders"));
            }
            if (bytes != t.bytes) {
              return absl::InternalError(absl::StrCat(PeerName(t.peer), " sent ", bytes,
                                                      " bytes in a ", OpName(op),
                                                      " frame where this rank expected ", t.bytes,
                                                      ": the ranks passed different sizes"));
            }
          }
        }
      }
    }
  }
}

namespace {
// Start of chunk c when n elements are cut into `parts` nearly equal chunks.
int64_t ChunkBegin(int64_t n, int parts, int c) {
  return n / parts * c + std::min<int64_t>(c, n % parts);
}
}  // namespace

absl::Status TcpCommunicator::RingAllReduce(float* data, int64_t n, absl::Time deadline) {
  const int N = size();
  const int next = (rank_ + 1) % N, prev = (rank_ + N - 1) % N;
  auto begin = [&](int c) { return ChunkBegin(n, N, c); };
  auto len = [&](int c) { return begin(c + 1) - begin(c); };
  scratch_.resize(static_cast<size_t>(len(0)));  // chunk 0 is the largest
  // Reduce-scatter: at step s, send chunk (rank-s-1) to next and fold chunk (rank-s-2) from
  // prev into ours. Chunk c thus accumulates x[c+1] + x[c+2] + ... + x[c], ending on rank c.
  for (int s = 0; s < N - 1; ++s) {
    const int send_c = (rank_ - s - 1 + 2 * N) % N, recv_c = (rank_ - s - 2 + 2 * N) % N;
    std::vector<Transfer> t(2);
    t[0].peer = next, t[0].send = true, t[0].op = Op::kAllReduce;
    t[0].data = reinterpret_cast<char*>(data + begin(send_c));
    t[0].bytes = static_cast<size_t>(len(send_c)) * sizeof(float);
    t[1].peer = prev, t[1].op = Op::kAllReduce;
    t[1].data = reinterpret_cast<char*>(scratch_.data());
    t[1].bytes = static_cast<size_t>(len(recv_c)) * sizeof(float);
    t[1].sum_into = data + begin(recv_c);
    TESSERA_RETURN_IF_ERROR(RunTransfers(t, deadline));
  }
  // All-gather: at step s, send chunk (rank-s), finished on this rank or received at step
  // s-1, and receive chunk (rank-s-1) in place.
  for (int s = 0; s < N - 1; ++s) {
    const int send_c = (rank_ - s + N) % N, recv_c = (rank_ - s - 1 + N) % N;
    std::vector<Transfer> t(2);
    t[0].peer = next, t[0].send = true, t[0].op = Op::kAllReduce;
    t[0].data = reinterpret_cast<char*>(data + begin(send_c));
    t[0].bytes = static_cast<size_t>(len(send_c)) * sizeof(float);
    t[1].peer = prev, t[1].op = Op::kAllReduce;
    t[1].data = reinterpret_cast<char*>(data + begin(recv_c));
    t[1].bytes = static_cast<size_t>(len(recv_c)) * sizeof(float);
    TESSERA_RETURN_IF_ERROR(RunTransfers(t, deadline));
  }
  return absl::OkStatus();
}

absl::Status TcpCommunicator::RingAllGatherV(const float* local, absl::Span<const int64_t> counts,
                                             float* out, absl::Time deadline) {
  const int N = size();
  const int next = (rank_ + 1) % N, prev = (rank_ + N - 1) % N;
  std::vector<int64_t> offset(N + 1, 0);
  for (int r = 0; r < N; ++r) offset[r + 1] = offset[r] + counts[r];
  if (out + offset[rank_] != local && counts[rank_] > 0) {
    std::memmove(out + offset[rank_], local, static_cast<size_t>(counts[rank_]) * sizeof(float));
  }
  // At step s, pass on block (rank-s) and receive block (rank-s-1).
  for (int s = 0; s < N - 1; ++s) {
    const int send_b = (rank_ - s + N) % N, recv_b = (rank_ - s - 1 + 2 * N) % N;
    std::vector<Transfer> t(2);
    t[0].peer = next, t[0].send = true, t[0].op = Op::kAllGather;
    t[0].data = reinterpret_cast<char*>(out + offset[send_b]);
    t[0].bytes = static_cast<size_t>(counts[send_b]) * sizeof(float);
    t[1].peer = prev, t[1].op = Op::kAllGather;
    t[1].data = reinterpret_cast<char*>(out + offset[recv_b]);
    t[1].bytes = static_cast<size_t>(counts[recv_b]) * sizeof(float);
    TESSERA_RETURN_IF_ERROR(RunTransfers(t, deadline));
  }
  return absl::OkStatus();
}

absl::Status TcpCommunicator::AllReduceSum(float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(CheckUsable("AllReduceSum"));
  if (n < 0 || (n > 0 && data == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllReduceSum: n = ", n, " with data ", data == nullptr ? "null" : "set"));
  }
  if (size() == 1) return absl::OkStatus();
  return Finish(RingAllReduce(data, n, absl::Now() + timeout_), "AllReduceSum");
}

absl::Status TcpCommunicator::AllGather(const float* local, int64_t n_local, float* out) {
  if (n_local < 0) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather: n_local = ", n_local));
  }
  return AllGatherV(local, std::vector<int64_t>(static_cast<size_t>(size()), n_local), out);
}

absl::Status TcpCommunicator::AllGatherV(const float* local, absl::Span<const int64_t> counts,
                                         float* out) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(CheckUsable("AllGather"));
  if (counts.size() != static_cast<size_t>(size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllGatherV: ", counts.size(), " counts for a group of ", size(), " ranks"));
  }
  int64_t total = 0;
  for (int r = 0; r < size(); ++r) {
    if (counts[r] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllGatherV: counts[", r, "] = ", counts[r], " is negative"));
    }
    total += counts[r];
  }
  if ((counts[rank_] > 0 && local == nullptr) || (total > 0 && out == nullptr)) {
    return absl::InvalidArgumentError("AllGatherV: null buffer with a nonzero count");
  }
  return Finish(RingAllGatherV(local, counts, out, absl::Now() + timeout_), "AllGather");
}

absl::Status TcpCommunicator::Send(int peer, const float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(CheckUsable("Send"));
  if (peer < 0 || peer >= size() || peer == rank_ || n < 0 || (n > 0 && data == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("Send to rank ", peer, " of ", n,
                                                   " floats: rank ", rank_, " of ", size(),
                                                   " can only send to another rank"));
  }
  std::vector<Transfer> t(1);
  t[0].peer = peer, t[0].send = true, t[0].op = Op::kSendRecv;
  t[0].data = reinterpret_cast<char*>(const_cast<float*>(data));
  t[0].bytes = static_cast<size_t>(n) * sizeof(float);
  return Finish(RunTransfers(t, absl::Now() + timeout_), "Send");
}

absl::Status TcpCommunicator::Recv(int peer, float* data, int64_t n) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(CheckUsable("Recv"));
  if (peer < 0 || peer >= size() || peer == rank_ || n < 0 || (n > 0 && data == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("Recv from rank ", peer, " of ", n,
                                                   " floats: rank ", rank_, " of ", size(),
                                                   " can only receive from another rank"));
  }
  std::vector<Transfer> t(1);
  t[0].peer = peer, t[0].op = Op::kSendRecv;
  t[0].data = reinterpret_cast<char*>(data);
  t[0].bytes = static_cast<size_t>(n) * sizeof(float);
  return Finish(RunTransfers(t, absl::Now() + timeout_), "Recv");
}

absl::Status TcpCommunicator::Barrier() {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(CheckUsable("Barrier"));
  // Every rank tells every other one it arrived, and waits for all of them.
  std::vector<Transfer> t;
  for (int r = 0; r < size(); ++r) {
    if (r == rank_) continue;
    Transfer s, g;
    s.peer = r, s.send = true, s.op = Op::kBarrier;
    g.peer = r, g.op = Op::kBarrier;
    t.push_back(s);
    t.push_back(g);
  }
  return Finish(RunTransfers(t, absl::Now() + timeout_), "Barrier");
}

}  // namespace tessera
