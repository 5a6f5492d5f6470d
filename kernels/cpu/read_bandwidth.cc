#include "kernels/cpu/read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/cpu/huge_pages.h"

namespace tessera {
namespace {

// Eight independent accumulators let the loads overlap; the compiler vectorises the loop with
// whatever the baseline ISA offers, which is enough to saturate memory (not the ALUs).
uint64_t SumRange(const uint64_t* p, int64_t n) {
  uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  for (; i < n; ++i) acc[0] += p[i];
  uint64_t s = 0;
  for (uint64_t a : acc) s += a;
  return s;
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool* pool, int64_t buffer_bytes)
    : pool_(pool), n_(buffer_bytes / 8) {
  // 2 MiB pages (huge_pages.h): what the backend's weight copies live in. Without them the
  // probe would also time the page walks of 4 KiB pages and understate the machine.
  absl::StatusOr<std::shared_ptr<HugePageMapping>> mapping = HugePageMapping::Create(n_ * 8);
  if (mapping.ok()) {
    mapping_ = *std::move(mapping);
    buf_ = reinterpret_cast<uint64_t*>(mapping_->data());
  } else {
    fallback_.reset(new uint64_t[static_cast<size_t>(n_)]);
    buf_ = fallback_.get();
  }
  pool_->Run([&](int t, int nt) {
    int64_t b, e;
    ThreadPool::Share(n_, t, nt, 512, &b, &e);
    for (int64_t i = b; i < e; ++i) buf_[i] = static_cast<uint64_t>(i);
  });
}

double ReadBandwidthProbe::Measure(int passes) {
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  for (int r = 0; r < passes; ++r) {
    const auto start = std::chrono::steady_clock::now();
    pool_->Run([&](int t, int nt) {
      int64_t b, e;
      ThreadPool::Share(n_, t, nt, 512, &b, &e);
      sink.fetch_add(SumRange(buf_ + b, e - b), std::memory_order_relaxed);
    });
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(n_ * 8) / s);
  }
  return sink.load() == 42 ? best * 1.0 : best;  // keeps the sums observable
}

double MeasureThreadRoundTrip(ThreadPool* pool, int round_trips) {
  if (pool->size() < 2 || round_trips < 1) return 0.0;
  constexpr int kBatches = 5;
  const int per_batch = std::max(1, round_trips / kBatches);
  // The flag alone on its line: thread 0 writes odd values, thread 1 answers with the next
  // even one.
  struct alignas(64) Flag {
    std::atomic<int64_t> value{0};
  };
  auto flag = std::make_unique<Flag>();
  std::vector<double> batch_s;
  pool->RunConcurrently([&](int t, int) {
    if (t > 1) return;
    std::atomic<int64_t>& v = flag->value;
    // Spins; where the two threads share a core (an oversubscribed machine) the wait gives
    // the core away now and then instead of spinning out its time slice.
    auto wait_for = [&](int64_t value) {
      for (int spins = 1; v.load(std::memory_order_acquire) != value; ++spins) {
        if (spins % 4096 == 0) std::this_thread::yield();
      }
    };
    const int64_t total = int64_t{kBatches} * per_batch + 1;  // the first one waits for thread 1
    if (t == 1) {
      for (int64_t i = 0; i < total; ++i) {
        wait_for(2 * i + 1);
        v.store(2 * i + 2, std::memory_order_release);
      }
      return;
    }
    auto exchange = [&](int64_t i) {
      v.store(2 * i + 1, std::memory_order_release);
      wait_for(2 * i + 2);
    };
    exchange(0);
    for (int b = 0; b < kBatches; ++b) {
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < per_batch; ++i) exchange(1 + int64_t{b} * per_batch + i);
      batch_s.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
          per_batch);
    }
  });
  std::sort(batch_s.begin(), batch_s.end());
  return batch_s[batch_s.size() / 2];
}

double MeasureReadBandwidth(ThreadPool* pool, int64_t buffer_bytes, int repeats) {
  return ReadBandwidthProbe(pool, buffer_bytes).Measure(repeats);
}

}  // namespace tessera
