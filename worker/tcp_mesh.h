// Forming a TCP group: the options every rank passes, and the full mesh of connections with
// the handshake that keeps strangers out (protocol in tcp_communicator.h).
//
// Thread-safety: FormTcpMesh is a free function; each rank calls it on its own listener.
#ifndef TESSERA_WORKER_TCP_MESH_H_
#define TESSERA_WORKER_TCP_MESH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/tcp_socket.h"

namespace tessera {

struct TcpGroupOptions {
  std::string group_id;                // the same on every rank, e.g. "replica0/tp/stage1"
  int rank = 0;                        // this rank, in [0, addresses.size())
  std::vector<std::string> addresses;  // "host:port" of every rank, in rank order
  absl::Duration connect_timeout = absl::Seconds(60);  // forming the whole mesh
  absl::Duration timeout = absl::Seconds(60);          // each later operation
};

// Connects this rank to each lower rank (retrying until the connect deadline) and accepts each
// higher one on `listener` (which may be null for a group of one), checking every handshake.
// Returns one connected, non-blocking, TCP_NODELAY socket per rank (invalid at options.rank).
// Errors start with "group 'ID' rank R: " and name the peer at fault.
absl::StatusOr<std::vector<ScopedFd>> FormTcpMesh(const TcpGroupOptions& options,
                                                  TcpListener* listener);

}  // namespace tessera

#endif  // TESSERA_WORKER_TCP_MESH_H_
