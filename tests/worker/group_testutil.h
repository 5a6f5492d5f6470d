// Forms TcpCommunicator groups on loopback for tests: every rank listens on 127.0.0.1 port 0
// (the kernel picks a free port, published to the others before anyone connects), and the
// ranks join on threads of this process.
#ifndef TESSERA_TESTS_WORKER_GROUP_TESTUTIL_H_
#define TESSERA_TESTS_WORKER_GROUP_TESTUTIL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/tcp_communicator.h"

namespace tessera {

// Bound listeners and the addresses they publish, before any rank forms the group.
struct LoopbackEndpoints {
  std::vector<std::unique_ptr<TcpListener>> listeners;
  std::vector<std::string> addresses;
};
LoopbackEndpoints BindLoopback(int n);

TcpGroupOptions GroupOptions(const std::string& group_id, int rank,
                             const std::vector<std::string>& addresses,
                             absl::Duration timeout = absl::Seconds(30));

// Forms a whole group of n ranks (fails the test and returns an empty vector on error).
std::vector<std::unique_ptr<TcpCommunicator>> FormGroup(int n, const std::string& group_id,
                                                        absl::Duration timeout = absl::Seconds(30));

// Runs fn(rank) on one thread per rank and joins them.
void OnRanks(int n, const std::function<void(int)>& fn);

}  // namespace tessera

#endif  // TESSERA_TESTS_WORKER_GROUP_TESTUTIL_H_
