#include "worker/tcp_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera {

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

int ScopedFd::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void ScopedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

std::string Bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

absl::StatusOr<AddrInfoPtr> Resolve(const HostPort& hp, bool passive) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* result = nullptr;
  const std::string port = std::to_string(hp.port);
  const int rc =
      getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve host '", hp.host, "': ", gai_strerror(rc)));
  }
  return AddrInfoPtr(result);
}

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("fcntl(O_NONBLOCK): ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

// Waits for `events` on fd until deadline. Returns true when ready, false on timeout.
absl::StatusOr<bool> WaitFor(int fd, short events, absl::Time deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, PollTimeoutMs(deadline));
    if (rc > 0) return true;
    if (rc == 0) {
      if (absl::Now() >= deadline) return false;
      continue;  // poll's millisecond rounding woke us early
    }
    if (errno == EINTR) continue;
    return absl::InternalError(absl::StrCat("poll: ", ErrnoText(errno)));
  }
}

}  // namespace

int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

absl::StatusOr<HostPort> ParseHostPort(std::string_view address) {
  const std::string addr(address);
  HostPort hp;
  std::string port;
  if (!addr.empty() && addr[0] == '[') {
    const size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", addr, "' is not of the form [ipv6]:port"));
    }
    hp.host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
  } else {
    const size_t colon = addr.rfind(':');
    if (colon == std::string::npos || addr.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", addr, "' is not of the form host:port"));
    }
    hp.host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port, &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", addr, "': port '", port, "' is not a number in [0, 65535]"));
  }
  return hp;
}

absl::StatusOr<std::unique_ptr<TcpListener>> TcpListener::Listen(std::string_view address) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  auto ai = Resolve(*hp, /*passive=*/true);
  if (!ai.ok()) return ai.status();
  std::string last_error = "no address";
  for (addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    ScopedFd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      last_error = ErrnoText(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || listen(fd.get(), 128) != 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    sockaddr_storage bound;
    socklen_t len = sizeof(bound);
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    int port = 0;
    if (bound.ss_family == AF_INET) {
      sockaddr_in sin;
      std::memcpy(&sin, &bound, sizeof(sin));
      port = ntohs(sin.sin_port);
    } else {
      sockaddr_in6 sin6;
      std::memcpy(&sin6, &bound, sizeof(sin6));
      port = ntohs(sin6.sin6_port);
    }
    absl::Status s = SetNonBlocking(fd.get());
    if (!s.ok()) return s;
    return std::unique_ptr<TcpListener>(new TcpListener(std::move(fd), hp->host, port));
  }
  return absl::UnavailableError(
      absl::StrCat("cannot listen on '", std::string(address), "': ", last_error));
}

std::string TcpListener::address() const { return absl::StrCat(Bracketed(host_), ":", port_); }

absl::StatusOr<ScopedFd> TcpListener::Accept(absl::Time deadline) {
  for (;;) {
    auto ready = WaitFor(fd_.get(), POLLIN, deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) {
      return absl::DeadlineExceededError(
          absl::StrCat("no connection arrived at ", address(), " in time"));
    }
    ScopedFd conn(accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (conn.valid()) return conn;
    // Transient: interrupted, or a client gave up between poll and accept.
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED ||
        errno == EPROTO) {
      continue;
    }
    return absl::InternalError(absl::StrCat("accept on ", address(), ": ", ErrnoText(errno)));
  }
}

absl::StatusOr<ScopedFd> ConnectTcp(const HostPort& to, absl::Time deadline) {
  auto ai = Resolve(to, /*passive=*/false);
  if (!ai.ok()) return ai.status();
  const std::string where = absl::StrCat(Bracketed(to.host), ":", to.port);
  absl::Status last = absl::UnavailableError(absl::StrCat("no address for ", where));
  for (addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    ScopedFd fd(
        socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd.valid()) {
      last = absl::InternalError(absl::StrCat("socket: ", ErrnoText(errno)));
      continue;
    }
    int rc;
    do {
      rc = connect(fd.get(), a->ai_addr, a->ai_addrlen);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && errno != EINPROGRESS) {
      last = absl::UnavailableError(absl::StrCat("connect to ", where, ": ", ErrnoText(errno)));
      continue;
    }
    if (rc != 0) {
      auto ready = WaitFor(fd.get(), POLLOUT, deadline);
      if (!ready.ok()) return ready.status();
      if (!*ready) {
        return absl::DeadlineExceededError(absl::StrCat("connect to ", where, " timed out"));
      }
      int err = 0;
      socklen_t len = sizeof(err);
      if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last = absl::UnavailableError(absl::StrCat("connect to ", where, ": ", ErrnoText(err)));
        continue;
      }
    }
    return fd;
  }
  return last;
}

absl::Status SetNoDelay(int fd) {
  const int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return absl::InternalError(absl::StrCat("setsockopt(TCP_NODELAY): ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

absl::Status WriteFully(int fd, const void* data, size_t n, absl::Time deadline,
                        std::string_view peer) {
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t w = send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (w > 0) {
      done += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto ready = WaitFor(fd, POLLOUT, deadline);
      if (!ready.ok()) return ready.status();
      if (!*ready) {
        return absl::DeadlineExceededError(
            absl::StrCat(std::string(peer), " did not take data in time"));
      }
      continue;
    }
    return absl::UnavailableError(absl::StrCat("lost the connection to ", std::string(peer), ": ",
                                               ErrnoText(w < 0 ? errno : EPIPE)));
  }
  return absl::OkStatus();
}

absl::Status ReadFully(int fd, void* data, size_t n, absl::Time deadline, std::string_view peer) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = recv(fd, p + done, n - done, 0);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError(absl::StrCat(std::string(peer), " closed the connection"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      auto ready = WaitFor(fd, POLLIN, deadline);
      if (!ready.ok()) return ready.status();
      if (!*ready) {
        return absl::DeadlineExceededError(
            absl::StrCat("no data from ", std::string(peer), " in time"));
      }
      continue;
    }
    return absl::UnavailableError(
        absl::StrCat("lost the connection to ", std::string(peer), ": ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

}  // namespace tessera
