// All-reduce bandwidth of the TcpCommunicator over loopback, ranks on threads of this
// process, printed beside the memcpy bandwidth measured in the same run.
//
// Figures follow nccl-tests' definitions (doc/PERFORMANCE.md there): algorithm bandwidth
// algbw = bytes / time, and bus bandwidth busbw = algbw * 2 (n-1) / n, the rate each link
// carries in a ring all-reduce, comparable across rank counts and with a link's raw speed.
// On loopback every byte a rank sends is copied by the kernel twice (into the socket buffer and
// out of it) and summed once, so memcpy bandwidth is the natural ceiling to print beside it.
//
//   comm_bench --ranks=2 --min_bytes=4096 --max_bytes=67108864
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "worker/tcp_communicator.h"

ABSL_FLAG(int, ranks, 2, "ranks in the group (threads of this process)");
ABSL_FLAG(int64_t, min_bytes, 4096, "smallest message (bytes, rounded down to whole floats)");
ABSL_FLAG(int64_t, max_bytes, int64_t{64} << 20, "largest message (bytes)");
ABSL_FLAG(int, factor, 2, "size multiplier between rows");
ABSL_FLAG(double, min_seconds, 0.3, "minimum timed duration per row");

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Die(const absl::Status& s) {
  absl::FPrintF(stderr, "comm_bench: %s\n", s.ToString());
  std::exit(1);
}

// memcpy of a buffer larger than the last-level cache, in GB/s of bytes copied.
double MemcpyGBps(int64_t bytes, double min_seconds) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  std::memcpy(dst.data(), src.data(), bytes);  // fault the pages in
  int64_t iters = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    std::memcpy(dst.data(), src.data(), bytes);
    src[iters % bytes] ^= dst[(iters * 7919) % bytes];  // keep the copies observable
    ++iters;
    elapsed = Seconds(Clock::now() - start);
  } while (elapsed < min_seconds);
  return static_cast<double>(bytes) * iters / elapsed / 1e9;
}

std::vector<std::unique_ptr<TcpCommunicator>> FormGroup(int n) {
  std::vector<std::unique_ptr<TcpListener>> listeners;
  std::vector<std::string> addresses;
  for (int r = 0; r < n; ++r) {
    auto l = TcpListener::Listen("127.0.0.1:0");
    if (!l.ok()) Die(l.status());
    addresses.push_back((*l)->address());
    listeners.push_back(*std::move(l));
  }
  std::vector<std::unique_ptr<TcpCommunicator>> comms(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      TcpGroupOptions o;
      o.group_id = "comm_bench";
      o.rank = r;
      o.addresses = addresses;
      auto c = TcpCommunicator::Create(o, std::move(listeners[r]));
      if (!c.ok()) Die(c.status());
      comms[r] = *std::move(c);
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

// Runs `iters` all-reduces of n floats on every rank; returns rank 0's seconds per call.
double TimeAllReduce(std::vector<std::unique_ptr<TcpCommunicator>>& comms,
                     std::vector<std::vector<float>>& data, int64_t n, int64_t iters) {
  const int ranks = static_cast<int>(comms.size());
  double seconds = 0;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      absl::Status s = comms[r]->Barrier();
      if (!s.ok()) Die(s);
      const auto start = Clock::now();
      for (int64_t i = 0; i < iters; ++i) {
        s = comms[r]->AllReduceSum(data[r].data(), n);
        if (!s.ok()) Die(s);
      }
      if (r == 0) seconds = Seconds(Clock::now() - start) / static_cast<double>(iters);
    });
  }
  for (auto& t : threads) t.join();
  return seconds;
}

int Main() {
  const int ranks = absl::GetFlag(FLAGS_ranks);
  const int64_t min_bytes = std::max<int64_t>(4, absl::GetFlag(FLAGS_min_bytes));
  const int64_t max_bytes = std::max(min_bytes, absl::GetFlag(FLAGS_max_bytes));
  const int factor = std::max(2, absl::GetFlag(FLAGS_factor));
  const double min_seconds = absl::GetFlag(FLAGS_min_seconds);
  if (ranks < 2) {
    absl::FPrintF(stderr, "comm_bench: --ranks must be at least 2\n");
    return 2;
  }
  const double memcpy_gbps = MemcpyGBps(std::max<int64_t>(max_bytes, int64_t{64} << 20), 0.5);
  absl::PrintF("TcpCommunicator all-reduce over loopback, %d ranks (threads, one process)\n",
               ranks);
  absl::PrintF("memcpy bandwidth, same run: %.2f GB/s\n\n", memcpy_gbps);
  absl::PrintF("%12s %12s %12s %12s %12s\n", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s",
               "busbw/memcpy");
  auto comms = FormGroup(ranks);
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= factor) {
    const int64_t n = bytes / 4;
    // Zeros: repeated in-place sums stay finite (and never denormal); adding costs the same.
    std::vector<std::vector<float>> data(ranks, std::vector<float>(n, 0.0f));
    // Warm up (socket buffers, page faults), then size the timed run from one call.
    const double one = TimeAllReduce(comms, data, n, 3);
    const int64_t iters =
        std::clamp<int64_t>(static_cast<int64_t>(min_seconds / std::max(one, 1e-7)), 5, 100000);
    const double t = TimeAllReduce(comms, data, n, iters);
    const double algbw = n * 4.0 / t / 1e9;
    const double busbw = algbw * 2.0 * (ranks - 1) / ranks;
    absl::PrintF("%12d %12.1f %12.3f %12.3f %12.2f\n", n * 4, t * 1e6, algbw, busbw,
                 busbw / memcpy_gbps);
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return tessera::Main();
}
