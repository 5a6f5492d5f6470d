// POSIX TCP plumbing for the TcpCommunicator: "host:port" addresses, an owned descriptor, a
// listening socket (port 0 picks a free port, which port() then publishes), connecting and
// accepting with a deadline, and reading/writing exact byte counts with a deadline.
//
// Every socket here is non-blocking and every wait is a poll() bounded by an absl::Time
// deadline, so nothing can hang on a dead peer. EINTR is retried; partial reads and writes are
// continued. Writes use MSG_NOSIGNAL: a closed peer is an UNAVAILABLE status, never SIGPIPE.
//
// Thread-safety: a ScopedFd or TcpListener belongs to one thread at a time.
#ifndef TESSERA_WORKER_TCP_SOCKET_H_
#define TESSERA_WORKER_TCP_SOCKET_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera {

// Owns a file descriptor; closes it on destruction. Move-only.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct HostPort {
  std::string host;  // name, IPv4 literal, or IPv6 literal without brackets
  int port = 0;
};
// Parses "host:port" or "[v6]:port"; INVALID_ARGUMENT quoting the address otherwise.
absl::StatusOr<HostPort> ParseHostPort(std::string_view address);

// A listening socket.
class TcpListener {
 public:
  // Binds and listens on `address` ("host:port"; port 0 lets the kernel choose).
  static absl::StatusOr<std::unique_ptr<TcpListener>> Listen(std::string_view address);
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  // The port actually bound, and "host:port" with it (what peers should connect to).
  int port() const { return port_; }
  std::string address() const;

  // Waits until `deadline` for one connection; DEADLINE_EXCEEDED if none arrives.
  absl::StatusOr<ScopedFd> Accept(absl::Time deadline);

 private:
  TcpListener(ScopedFd fd, std::string host, int port)
      : fd_(std::move(fd)), host_(std::move(host)), port_(port) {}
  ScopedFd fd_;
  std::string host_;
  int port_;
};

// One connection attempt, bounded by `deadline`. UNAVAILABLE when nobody listens there yet (the
// caller may retry), DEADLINE_EXCEEDED when the attempt itself times out.
absl::StatusOr<ScopedFd> ConnectTcp(const HostPort& to, absl::Time deadline);

// Disables Nagle's algorithm: collectives send small messages that must leave at once.
absl::Status SetNoDelay(int fd);

// Exactly n bytes, waiting until `deadline`. Errors name `peer` (e.g. "rank 1 (10.0.0.2:7000)"):
// DEADLINE_EXCEEDED on timeout, UNAVAILABLE if the peer closed or reset the connection.
absl::Status WriteFully(int fd, const void* data, size_t n, absl::Time deadline,
                        std::string_view peer);
absl::Status ReadFully(int fd, void* data, size_t n, absl::Time deadline, std::string_view peer);

// Milliseconds left until `deadline` for poll(): 0 when past, -1 for an infinite deadline.
int PollTimeoutMs(absl::Time deadline);

// Little-endian integers of `bytes` bytes in wire messages (byte by byte: no alignment needs).
inline void PutLe(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline uint64_t GetLe(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace tessera

#endif  // TESSERA_WORKER_TCP_SOCKET_H_
