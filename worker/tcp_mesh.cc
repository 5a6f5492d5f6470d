#include "worker/tcp_mesh.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

// Hello = 6 u32 (magic, version, group size, from rank, to rank, group id length) then the
// group id; reply = 3 u32 (magic, 0 = accepted / 1 = refused, reason length) then the reason.
constexpr uint32_t kHelloMagic = 0x48525354;  // "TSRH"
constexpr uint32_t kReplyMagic = 0x52525354;  // "TSRR"
constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kHelloBytes = 24, kReplyBytes = 12;
constexpr uint32_t kMaxGroupIdBytes = 1024, kMaxReasonBytes = 4096;
// A connection that sends no handshake must not hold up the real peers for long.
constexpr absl::Duration kHandshakeTimeout = absl::Seconds(5);

absl::Status WithPrefix(const absl::Status& s, const std::string& prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

std::string RankName(const TcpGroupOptions& o, int r) {
  return absl::StrCat("rank ", r, " (", o.addresses[r], ")");
}

absl::Status SendReply(int fd, bool accepted, const std::string& reason, absl::Time deadline,
                       const std::string& peer) {
  std::string msg(kReplyBytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(msg.data());
  PutLe(p, kReplyMagic, 4);
  PutLe(p + 4, accepted ? 0 : 1, 4);
  const std::string r = reason.substr(0, kMaxReasonBytes);
  PutLe(p + 8, r.size(), 4);
  msg += r;
  return WriteFully(fd, msg.data(), msg.size(), deadline, peer);
}

// Connects to lower rank `to` and completes the handshake, retrying while it is not up yet.
absl::StatusOr<ScopedFd> ConnectToPeer(const TcpGroupOptions& o, int to, absl::Time deadline) {
  const std::string peer = RankName(o, to);
  TESSERA_ASSIGN_OR_RETURN(const HostPort hp, ParseHostPort(o.addresses[to]));
  std::string hello(kHelloBytes, '\0');
  auto* h = reinterpret_cast<unsigned char*>(hello.data());
  PutLe(h, kHelloMagic, 4);
  PutLe(h + 4, kProtocolVersion, 4);
  PutLe(h + 8, o.addresses.size(), 4);
  PutLe(h + 12, static_cast<uint32_t>(o.rank), 4);
  PutLe(h + 16, static_cast<uint32_t>(to), 4);
  PutLe(h + 20, o.group_id.size(), 4);
  hello += o.group_id;

  absl::Duration backoff = absl::Milliseconds(5);
  absl::Status last;
  for (;;) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("could not reach ", peer, " within the connect timeout of ",
                       absl::FormatDuration(o.connect_timeout), " (last error: ", last.message(),
                       "); is that worker running?"));
    }
    absl::StatusOr<ScopedFd> fd = ConnectTcp(hp, deadline);
    absl::Status s = fd.status();
    unsigned char reply[kReplyBytes];
    if (s.ok()) s = SetNoDelay(fd->get());
    if (s.ok()) s = WriteFully(fd->get(), hello.data(), hello.size(), deadline, peer);
    if (s.ok()) s = ReadFully(fd->get(), reply, kReplyBytes, deadline, peer);
    if (s.ok()) {
      if (GetLe(reply, 4) != kReplyMagic) {
        return absl::FailedPreconditionError(absl::StrCat(
            peer, " answered the handshake with something that is not a Tessera communicator"));
      }
      const uint32_t len = static_cast<uint32_t>(GetLe(reply + 8, 4));
      if (len > kMaxReasonBytes) {
        return absl::FailedPreconditionError(
            absl::StrCat(peer, " sent a handshake reply with a reason of ", len, " bytes"));
      }
      std::string reason(len, '\0');
      TESSERA_RETURN_IF_ERROR(ReadFully(fd->get(), reason.data(), len, deadline, peer));
      if (GetLe(reply + 4, 4) != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat(peer, " refused this rank's connection: ", reason));
      }
      return std::move(*fd);
    }
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(
          absl::StrCat("no handshake with ", peer, " within the connect timeout of ",
                       absl::FormatDuration(o.connect_timeout), ": ", s.message()));
    }
    if (s.code() != absl::StatusCode::kUnavailable) return s;
    // Not listening yet, or went away mid-handshake: try again shortly.
    last = s;
    absl::SleepFor(std::min(backoff, deadline - absl::Now()));
    backoff = std::min(backoff * 2, absl::Milliseconds(200));
  }
}

// Reads one hello on `fd`; returns the sender's rank, or the reason to refuse it.
absl::StatusOr<int> ReadHello(const TcpGroupOptions& o, int fd, absl::Time deadline,
                              const std::vector<ScopedFd>& fds) {
  const std::string who = "a connecting peer";
  unsigned char h[kHelloBytes];
  TESSERA_RETURN_IF_ERROR(ReadFully(fd, h, kHelloBytes, deadline, who));
  if (GetLe(h, 4) != kHelloMagic) {
    return absl::FailedPreconditionError("it is not a Tessera communicator (bad magic)");
  }
  if (GetLe(h + 4, 4) != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it speaks protocol version ", GetLe(h + 4, 4), ", this rank ", kProtocolVersion));
  }
  const uint64_t size = GetLe(h + 8, 4), from = GetLe(h + 12, 4), to = GetLe(h + 16, 4);
  const uint64_t id_len = GetLe(h + 20, 4);
  if (id_len > kMaxGroupIdBytes) {
    return absl::FailedPreconditionError(absl::StrCat("its group id has ", id_len, " bytes"));
  }
  std::string group(id_len, '\0');
  TESSERA_RETURN_IF_ERROR(ReadFully(fd, group.data(), id_len, deadline, who));
  if (group != o.group_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("it belongs to group '", group, "', this rank to group '", o.group_id, "'"));
  }
  if (size != o.addresses.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it expects a group of ", size, " ranks, this rank one of ", o.addresses.size()));
  }
  if (to != static_cast<uint64_t>(o.rank)) {
    return absl::FailedPreconditionError(
        absl::StrCat("it wants rank ", to, ", but rank ", o.rank, " listens here"));
  }
  if (from <= static_cast<uint64_t>(o.rank) || from >= size) {
    return absl::FailedPreconditionError(absl::StrCat("it claims rank ", from, ", but only ranks ",
                                                      o.rank + 1, "..", size - 1,
                                                      " connect to rank ", o.rank));
  }
  if (fds[from].valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", from, " is already connected to rank ", o.rank));
  }
  return static_cast<int>(from);
}

// Accepts every higher rank, refusing strays, until all arrived or the deadline passes.
absl::Status AcceptPeers(const TcpGroupOptions& o, TcpListener* listener, absl::Time deadline,
                         std::vector<ScopedFd>& fds) {
  const int n = static_cast<int>(o.addresses.size());
  std::vector<std::string> refused;
  int missing = n - 1 - o.rank;
  while (missing > 0) {
    absl::StatusOr<ScopedFd> conn = listener->Accept(deadline);
    if (!conn.ok() && conn.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return conn.status();
    }
    if (!conn.ok()) {
      std::vector<std::string> absent;
      for (int r = o.rank + 1; r < n; ++r) {
        if (!fds[r].valid()) absent.push_back(RankName(o, r));
      }
      std::string msg = absl::StrCat(absl::StrJoin(absent, ", "),
                                     " never connected within the connect timeout of ",
                                     absl::FormatDuration(o.connect_timeout));
      if (!refused.empty()) {
        absl::StrAppend(&msg, "; refused connections: ", absl::StrJoin(refused, "; "));
      }
      return absl::DeadlineExceededError(msg);
    }
    const absl::Time hello_deadline = std::min(deadline, absl::Now() + kHandshakeTimeout);
    absl::StatusOr<int> from = ReadHello(o, conn->get(), hello_deadline, fds);
    const std::string peer = from.ok() ? RankName(o, *from) : "a connecting peer";
    if (!from.ok()) {
      refused.push_back(std::string(from.status().message()));
      // Best effort: tell the stranger why (it may already be gone).
      SendReply(conn->get(), false, std::string(from.status().message()), hello_deadline, peer)
          .IgnoreError();
      continue;
    }
    absl::Status s = SetNoDelay(conn->get());
    if (s.ok()) s = SendReply(conn->get(), true, "", hello_deadline, peer);
    if (!s.ok()) {
      refused.push_back(absl::StrCat(peer, " vanished during the handshake: ", s.message()));
      continue;
    }
    fds[*from] = std::move(*conn);
    --missing;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<ScopedFd>> FormTcpMesh(const TcpGroupOptions& options,
                                                  TcpListener* listener) {
  const int n = static_cast<int>(options.addresses.size());
  if (n < 1) return absl::InvalidArgumentError("TcpGroupOptions.addresses is empty");
  if (options.rank < 0 || options.rank >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("TcpGroupOptions.rank ", options.rank, " is outside [0, ", n, ")"));
  }
  if (options.group_id.empty() || options.group_id.size() > kMaxGroupIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("TcpGroupOptions.group_id must have 1..", kMaxGroupIdBytes, " bytes"));
  }
  for (const std::string& a : options.addresses) TESSERA_RETURN_IF_ERROR(ParseHostPort(a).status());
  if (n > 1 && listener == nullptr) {
    return absl::InvalidArgumentError("forming a TCP group of size > 1 needs a listener");
  }
  const std::string prefix =
      absl::StrCat("group '", options.group_id, "' rank ", options.rank, ": ");
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  std::vector<ScopedFd> fds(n);
  for (int r = 0; r < options.rank; ++r) {
    auto fd = ConnectToPeer(options, r, deadline);
    if (!fd.ok()) return WithPrefix(fd.status(), prefix);
    fds[r] = *std::move(fd);
  }
  if (n > 1) {
    absl::Status s = AcceptPeers(options, listener, deadline, fds);
    if (!s.ok()) return WithPrefix(s, prefix);
  }
  return fds;
}

}  // namespace tessera
