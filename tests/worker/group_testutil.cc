#include "tests/worker/group_testutil.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace tessera {

LoopbackEndpoints BindLoopback(int n) {
  LoopbackEndpoints e;
  for (int r = 0; r < n; ++r) {
    auto l = TcpListener::Listen("127.0.0.1:0");
    EXPECT_TRUE(l.ok()) << l.status();
    if (!l.ok()) return {};
    e.addresses.push_back((*l)->address());
    e.listeners.push_back(*std::move(l));
  }
  return e;
}

TcpGroupOptions GroupOptions(const std::string& group_id, int rank,
                             const std::vector<std::string>& addresses, absl::Duration timeout) {
  TcpGroupOptions o;
  o.group_id = group_id;
  o.rank = rank;
  o.addresses = addresses;
  o.connect_timeout = timeout;
  o.timeout = timeout;
  return o;
}

void OnRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

std::vector<std::unique_ptr<TcpCommunicator>> FormGroup(int n, const std::string& group_id,
                                                        absl::Duration timeout) {
  LoopbackEndpoints e = BindLoopback(n);
  if (static_cast<int>(e.listeners.size()) != n) return {};
  std::vector<std::unique_ptr<TcpCommunicator>> comms(n);
  std::atomic<bool> ok{true};
  OnRanks(n, [&](int r) {
    auto c = TcpCommunicator::Create(GroupOptions(group_id, r, e.addresses, timeout),
                                     std::move(e.listeners[r]));
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) {
      comms[r] = *std::move(c);
    } else {
      ok = false;
    }
  });
  if (!ok) return {};
  return comms;
}

}  // namespace tessera
