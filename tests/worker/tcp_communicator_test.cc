// TcpCommunicator on loopback, ranks on threads of this process: collectives against float64
// references computed here, point-to-point transfers, and the failure modes (a peer that never
// comes, one that dies or stalls mid-operation, a stranger from another group, ranks that
// disagree on sizes or order) each giving a status that names the peer instead of a hang.
#include "worker/tcp_communicator.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/group_testutil.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomVector(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(TcpCommunicator, AllReduceSumMatchesFloat64SumAndIsBitIdenticalOnEveryRank) {
  const std::vector<int64_t> sizes = {0, 1, 3, 1000, 1 << 20};
  for (int n_ranks = 1; n_ranks <= 4; ++n_ranks) {
    auto comms = FormGroup(n_ranks, "allreduce");
    ASSERT_EQ(comms.size(), static_cast<size_t>(n_ranks));
    for (int64_t n : sizes) {
      SCOPED_TRACE(testing::Message() << n_ranks << " ranks, n = " << n);
      std::vector<std::vector<float>> data(n_ranks);
      for (int r = 0; r < n_ranks; ++r) data[r] = RandomVector(n, 1000 * n_ranks + 10 * r + n);
      // Reference: float64 sums (exact for up to 4 float32 terms of this range) and the sum of
      // magnitudes for the error bound.
      std::vector<double> sum(n, 0.0), abs_sum(n, 0.0);
      for (int r = 0; r < n_ranks; ++r) {
        for (int64_t i = 0; i < n; ++i) {
          sum[i] += data[r][i];
          abs_sum[i] += std::fabs(data[r][i]);
        }
      }
      std::vector<absl::Status> st(n_ranks);
      OnRanks(n_ranks, [&](int r) { st[r] = comms[r]->AllReduceSum(data[r].data(), n); });
      for (int r = 0; r < n_ranks; ++r) ASSERT_TRUE(st[r].ok()) << st[r];
      // Summing k float32 values in any order errs by at most (k-1) u sum|x_i| (u = 2^-24,
      // Higham's bound for recursive summation; the 1.001 covers its second-order term). One
      // rank adds nothing, so its result must be exact.
      const double u = std::ldexp(1.0, -24);
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double bound = (n_ranks - 1) * u * abs_sum[i] * 1.001;
        if (std::fabs(data[0][i] - sum[i]) > bound && ++bad <= 5) {
          ADD_FAILURE() << "element " << i << ": " << data[0][i] << " vs " << sum[i];
        }
      }
      EXPECT_EQ(bad, 0);
      for (int r = 1; r < n_ranks && n > 0; ++r) {
        EXPECT_EQ(std::memcmp(data[r].data(), data[0].data(), n * sizeof(float)), 0)
            << "rank " << r << " differs from rank 0";
      }
    }
  }
}

TEST(TcpCommunicator, AllGatherVConcatenatesUnevenBlocksInRankOrder) {
  for (const std::vector<int64_t>& counts :
       std::vector<std::vector<int64_t>>{{5, 0, 17}, {1, 2, 3, 1000}, {0, 0}, {7}}) {
    const int n = static_cast<int>(counts.size());
    auto comms = FormGroup(n, "gather");
    ASSERT_EQ(comms.size(), counts.size());
    std::vector<float> want;
    std::vector<std::vector<float>> local(n);
    for (int r = 0; r < n; ++r) {
      for (int64_t i = 0; i < counts[r]; ++i) local[r].push_back(r * 10000.0f + i);
      want.insert(want.end(), local[r].begin(), local[r].end());
    }
    std::vector<std::vector<float>> out(n, std::vector<float>(want.size(), -1.0f));
    std::vector<absl::Status> st(n);
    OnRanks(n,
            [&](int r) { st[r] = comms[r]->AllGatherV(local[r].data(), counts, out[r].data()); });
    for (int r = 0; r < n; ++r) {
      ASSERT_TRUE(st[r].ok()) << st[r];
      EXPECT_EQ(out[r], want) << "rank " << r;
    }
  }
}

TEST(TcpCommunicator, AllGatherEqualBlocksAlsoInPlace) {
  const int n = 3, per = 4;
  auto comms = FormGroup(n, "gather-eq");
  ASSERT_EQ(comms.size(), 3u);
  std::vector<float> want(n * per);
  for (int i = 0; i < n * per; ++i) want[i] = 0.5f * i;
  std::vector<std::vector<float>> out(n, std::vector<float>(n * per, 0.0f)), out2 = out;
  for (int r = 0; r < n; ++r) {
    std::copy(want.begin() + r * per, want.begin() + (r + 1) * per, out2[r].begin() + r * per);
  }
  std::vector<absl::Status> st(n), st2(n);
  OnRanks(n, [&](int r) {
    st[r] = comms[r]->AllGather(want.data() + r * per, per, out[r].data());
    st2[r] = comms[r]->AllGather(out2[r].data() + r * per, per, out2[r].data());  // in place
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << st[r];
    ASSERT_TRUE(st2[r].ok()) << st2[r];
    EXPECT_EQ(out[r], want);
    EXPECT_EQ(out2[r], want);
  }
}

TEST(TcpCommunicator, SendRecvDeliversMessagesInOrderAlongAChain) {
  const int n = 4;
  auto comms = FormGroup(n, "chain");
  ASSERT_EQ(comms.size(), 4u);
  // Rank 0 sends three messages (one large, one empty, one small) to rank 1, which adds its rank
  // and forwards them, and so on to rank 3; rank 3 also answers rank 0 directly.
  const std::vector<int64_t> lens = {300000, 0, 5};
  std::vector<std::vector<float>> got(lens.size());
  std::vector<float> answer(2, 0.0f);
  std::vector<absl::Status> st(n);
  OnRanks(n, [&](int r) {
    auto& c = *comms[r];
    for (size_t m = 0; m < lens.size(); ++m) {
      std::vector<float> buf(lens[m]);
      if (r == 0) {
        for (int64_t i = 0; i < lens[m]; ++i) buf[i] = static_cast<float>(i % 1000) + m;
      } else {
        absl::Status s = c.Recv(r - 1, buf.data(), lens[m]);
        if (!s.ok()) {
          st[r] = s;
          return;
        }
        for (float& x : buf) x += r;
      }
      absl::Status s = r < n - 1 ? c.Send(r + 1, buf.data(), lens[m]) : absl::OkStatus();
      if (!s.ok()) {
        st[r] = s;
        return;
      }
      if (r == n - 1) got[m] = buf;
    }
    const float reply[2] = {42.0f, -1.5f};
    if (r == n - 1) st[r] = c.Send(0, reply, 2);
    if (r == 0) st[r] = c.Recv(n - 1, answer.data(), 2);
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].ok()) << st[r];
  for (size_t m = 0; m < lens.size(); ++m) {
    ASSERT_EQ(got[m].size(), static_cast<size_t>(lens[m]));
    for (int64_t i = 0; i < lens[m]; ++i) {
      ASSERT_EQ(got[m][i], static_cast<float>(i % 1000) + m + 1 + 2 + 3) << m << " " << i;
    }
  }
  EXPECT_EQ(answer, (std::vector<float>{42.0f, -1.5f}));
}

TEST(TcpCommunicator, BarrierWaitsForEveryRank) {
  const int n = 4;
  auto comms = FormGroup(n, "barrier");
  ASSERT_EQ(comms.size(), 4u);
  std::atomic<int> arrived{0};
  std::vector<int> seen(n, -1);
  std::vector<absl::Status> st(n);
  OnRanks(n, [&](int r) {
    // The last rank arrives late; nobody may leave the barrier before it arrived.
    if (r == n - 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    arrived.fetch_add(1);
    st[r] = comms[r]->Barrier();
    seen[r] = arrived.load();
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << st[r];
    EXPECT_EQ(seen[r], n) << "rank " << r << " left the barrier early";
  }
}

TEST(TcpCommunicator, SingleRankGroupNeedsNoNetwork) {
  auto c = TcpCommunicator::Create(GroupOptions("solo", 0, {"127.0.0.1:1"}));
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> v = {1.5f, 2.5f}, out(2);
  EXPECT_TRUE((*c)->AllReduceSum(v.data(), 2).ok());
  EXPECT_EQ(v, (std::vector<float>{1.5f, 2.5f}));
  EXPECT_TRUE((*c)->AllGather(v.data(), 2, out.data()).ok());
  EXPECT_EQ(out, v);
  EXPECT_TRUE((*c)->Barrier().ok());
  EXPECT_EQ((*c)->Send(0, v.data(), 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TcpCommunicator, BadOptionsAreRefused) {
  auto c = TcpCommunicator::Create(GroupOptions("g", 2, {"127.0.0.1:1", "127.0.0.1:2"}));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("rank 2"));
  c = TcpCommunicator::Create(GroupOptions("g", 0, {"127.0.0.1", "127.0.0.1:2"}));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("'127.0.0.1'"));
  c = TcpCommunicator::Create(GroupOptions("g", 0, {"127.0.0.1:1", "127.0.0.1:99999"}));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("99999"));
}

TEST(TcpCommunicator, PeerThatNeverConnectsIsATimeoutNamingIt) {
  LoopbackEndpoints e = BindLoopback(2);
  ASSERT_EQ(e.listeners.size(), 2u);
  // Rank 0 alone: rank 1 never connects.
  auto c = TcpCommunicator::Create(GroupOptions("g", 0, e.addresses, absl::Milliseconds(200)),
                                   std::move(e.listeners[0]));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("rank 1 (" + e.addresses[1] + ") never connected"));
  // Rank 1 alone: rank 0's port accepts at the kernel level, but nobody answers the handshake.
  LoopbackEndpoints f = BindLoopback(2);
  ASSERT_EQ(f.listeners.size(), 2u);
  c = TcpCommunicator::Create(GroupOptions("g", 1, f.addresses, absl::Milliseconds(200)),
                              std::move(f.listeners[1]));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("rank 0 (" + f.addresses[0] + ")"));
}

TEST(TcpCommunicator, ConnectionFromAnotherGroupIsRefused) {
  LoopbackEndpoints e = BindLoopback(2);
  ASSERT_EQ(e.listeners.size(), 2u);
  std::vector<absl::Status> st(2);
  OnRanks(2, [&](int r) {
    auto c = TcpCommunicator::Create(
        GroupOptions(r == 0 ? "replica-a" : "replica-b", r, e.addresses, absl::Milliseconds(300)),
        std::move(e.listeners[r]));
    st[r] = c.status();
  });
  EXPECT_EQ(st[1].code(), absl::StatusCode::kFailedPrecondition) << st[1];
  EXPECT_THAT(st[1].message(), HasSubstr("refused this rank's connection"));
  EXPECT_THAT(st[1].message(), HasSubstr("group 'replica-b', this rank to group 'replica-a'"));
  // The acceptor keeps waiting for its real peer, then says whom it turned away.
  EXPECT_EQ(st[0].code(), absl::StatusCode::kDeadlineExceeded) << st[0];
  EXPECT_THAT(st[0].message(), HasSubstr("refused connections"));
  EXPECT_THAT(st[0].message(), HasSubstr("'replica-b'"));
}

TEST(TcpCommunicator, StalledPeerIsATimeoutNamingItAndBreaksTheCommunicator) {
  auto comms = FormGroup(2, "stall", absl::Milliseconds(200));
  ASSERT_EQ(comms.size(), 2u);
  std::vector<float> v(1000, 1.0f);
  // Rank 1 is alive but never joins the all-reduce.
  absl::Status s = comms[0]->AllReduceSum(v.data(), 1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(s.message(), HasSubstr("rank 1 (127.0.0.1:"));
  s = comms[0]->Barrier();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("broke on an earlier error"));
  // Rank 0 dropped its links, so rank 1, joining late, learns at once that its peer is gone
  // (after reading what rank 0 had sent).
  s = comms[1]->AllReduceSum(v.data(), 1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("rank 0 (127.0.0.1:"));
}

TEST(TcpCommunicator, PeerThatExitsMidOperationIsUnavailable) {
  // A long timeout: the failure must come from the closed connections, not the clock.
  auto comms = FormGroup(3, "exit", absl::Seconds(60));
  ASSERT_EQ(comms.size(), 3u);
  const std::string rank2 = "rank 2 (";
  std::vector<std::vector<float>> v(2, std::vector<float>(1 << 16, 1.0f));
  std::vector<absl::Status> st(2);
  OnRanks(3, [&](int r) {
    if (r == 2) {
      comms[2].reset();  // the worker exits, closing its sockets
    } else {
      st[r] = comms[r]->AllReduceSum(v[r].data(), 1 << 16);
    }
  });
  // Both fail promptly. The first to notice names rank 2 (rank 0 receives from it in the
  // ring, rank 1 sends to it); the other may instead see that first one drop its links.
  EXPECT_EQ(st[0].code(), absl::StatusCode::kUnavailable) << st[0];
  EXPECT_EQ(st[1].code(), absl::StatusCode::kUnavailable) << st[1];
  EXPECT_TRUE(absl::StrContains(st[0].message(), rank2) ||
              absl::StrContains(st[1].message(), rank2))
      << st[0] << " / " << st[1];
}

TEST(TcpCommunicator, RanksThatDisagreeOnSizesOrOrderGetAnErrorNotGarbage) {
  for (bool order : {false, true}) {
    auto comms = FormGroup(2, "mismatch");
    ASSERT_EQ(comms.size(), 2u);
    std::vector<std::vector<float>> v(2, std::vector<float>(12, 1.0f));
    std::vector<absl::Status> st(2);
    OnRanks(2, [&](int r) {
      if (order && r == 0) {
        st[r] = comms[r]->Barrier();
      } else {
        st[r] = comms[r]->AllReduceSum(v[r].data(), r == 0 ? 10 : 12);
      }
    });
    EXPECT_FALSE(st[0].ok());
    EXPECT_FALSE(st[1].ok());
    // The first rank to read the other's frame header diagnoses it; the other may see its
    // link dropped instead.
    const std::string why = order ? "different orders" : "different sizes";
    int diagnosed = 0;
    for (const absl::Status& s : st) {
      if (s.code() == absl::StatusCode::kInternal) {
        EXPECT_THAT(s.message(), HasSubstr(why));
        ++diagnosed;
      }
    }
    EXPECT_GE(diagnosed, 1) << st[0] << " / " << st[1];
  }
}

TEST(TcpCommunicator, InvalidArgumentsDoNotBreakTheGroup) {
  auto comms = FormGroup(2, "args");
  ASSERT_EQ(comms.size(), 2u);
  float x = 1.0f;
  EXPECT_EQ(comms[0]->Send(0, &x, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->Send(5, &x, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->AllReduceSum(&x, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->AllGatherV(&x, std::vector<int64_t>{1}, &x).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> v = {1.0f, 2.0f};
  std::vector<std::vector<float>> d(2, v);
  std::vector<absl::Status> st(2);
  OnRanks(2, [&](int r) { st[r] = comms[r]->AllReduceSum(d[r].data(), 2); });
  ASSERT_TRUE(st[0].ok()) << st[0];
  EXPECT_EQ(d[0], (std::vector<float>{2.0f, 4.0f}));
}

}  // namespace
}  // namespace tessera
