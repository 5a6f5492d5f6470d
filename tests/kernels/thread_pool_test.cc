// ThreadPool: every index runs exactly once per Run, Share tiles a range exactly, and a pool
// survives many Runs (including after its workers went to sleep).
#include "kernels/cpu/thread_pool.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ThreadPoolTest, EveryIndexRunsExactlyOnce) {
  for (int n : {1, 2, 3, 7}) {
    ThreadPool pool(n);
    ASSERT_EQ(pool.size(), n);
    std::vector<std::atomic<int>> calls(n);
    std::atomic<int> bad_n{0};
    pool.Run([&](int i, int n_threads) {
      if (n_threads != n || i < 0 || i >= n) {
        bad_n.fetch_add(1);
        return;
      }
      calls[i].fetch_add(1);
    });
    EXPECT_EQ(bad_n.load(), 0) << n << " threads";
    for (int i = 0; i < n; ++i) EXPECT_EQ(calls[i].load(), 1) << "index " << i << " of " << n;
  }
}

TEST(ThreadPoolTest, OneThreadPoolRunsOnTheCaller) {
  ThreadPool pool(1);
  std::thread::id ran_on;
  pool.Run([&](int i, int n) {
    EXPECT_EQ(i, 0);
    EXPECT_EQ(n, 1);
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(ThreadPool(0).size(), 1);
  EXPECT_EQ(ThreadPool(-3).size(), 1);
}

TEST(ThreadPoolTest, CallerIsIndexZero) {
  ThreadPool pool(3);
  std::thread::id zero;
  pool.Run([&](int i, int) {
    if (i == 0) zero = std::this_thread::get_id();
  });
  EXPECT_EQ(zero, std::this_thread::get_id());
}

TEST(ThreadPoolTest, ReusedAcrossManyRunsWithResultsVisibleToTheNextRun) {
  constexpr int kThreads = 3, kRuns = 2000;
  ThreadPool pool(kThreads);
  // Run k writes slot i = k; run k + 1 reads the slot another index wrote in run k. A Run
  // that returned before all its work finished, or that did not publish the writes, would
  // show a stale value.
  std::vector<int> slot(kThreads, -1);
  std::atomic<int> stale{0};
  std::vector<int> count(kThreads, 0);
  for (int k = 0; k < kRuns; ++k) {
    pool.Run([&](int i, int n) {
      if (k > 0 && slot[(i + 1) % n] != k - 1) stale.fetch_add(1);
      ++count[i];
    });
    pool.Run([&](int i, int) { slot[i] = k; });
  }
  EXPECT_EQ(stale.load(), 0);
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(count[i], kRuns);
}

TEST(ThreadPoolTest, WakesWorkersThatWentToSleep) {
  ThreadPool pool(2);
  for (int k = 0; k < 3; ++k) {
    // Long enough for the workers to stop spinning and block on the condition variable.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::atomic<int> calls{0};
    pool.Run([&](int, int) { calls.fetch_add(1); });
    EXPECT_EQ(calls.load(), 2);
  }
}

TEST(ThreadPoolTest, WakesTheCallerThatWentToSleep) {
  // A worker's share outlasts the caller's spin, so the caller sleeps until the last worker
  // wakes it; a lost wake-up would hang here.
  ThreadPool pool(3);
  for (int k = 0; k < 3; ++k) {
    std::atomic<int> calls{0};
    pool.Run([&](int i, int) {
      if (i == 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      calls.fetch_add(1);
    });
    EXPECT_EQ(calls.load(), 3);
  }
}

TEST(ThreadPoolTest, NoLostWakeUpsAroundTheSpinDeadline) {
  // Gaps between Runs and shares on the workers near the spin budget (200 us), where a
  // thread decides to sleep while the other side is publishing: every Run still returns,
  // with every index run once.
  ThreadPool pool(2);
  int done = 0;
  for (int k = 0; k < 300; ++k) {
    const auto gap = std::chrono::microseconds(150 + (k * 37) % 120);
    std::atomic<int> calls{0};
    pool.Run([&](int i, int) {
      if (i == 1 && k % 3 == 0) std::this_thread::sleep_for(gap);
      calls.fetch_add(1);
    });
    done += calls.load() == 2;
    if (k % 2 == 0) std::this_thread::sleep_for(gap);
  }
  EXPECT_EQ(done, 300);
}

// Restricts the calling thread (and threads it starts) to the CPU it runs on; restores the
// old set when destroyed.
class OnOneCpu {
 public:
  OnOneCpu() {
    CPU_ZERO(&old_);
    ok_ = sched_getaffinity(0, sizeof old_, &old_) == 0;
    const int cpu = sched_getcpu();
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu < 0 ? 0 : cpu, &one);
    ok_ = ok_ && sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~OnOneCpu() { sched_setaffinity(0, sizeof old_, &old_); }
  bool ok() const { return ok_; }

 private:
  cpu_set_t old_;
  bool ok_ = false;
};

TEST(ThreadPoolTest, RunsOnTheCallerWhenTheWorkersHaveNoCpuOfTheirOwn) {
  // Caller and worker on one CPU: each Run would wait out the spin budget of one while the
  // other cannot run (~0.4 ms a Run). The pool notices the late starts and runs the indices
  // on the caller, every one exactly once per Run.
  OnOneCpu one_cpu;
  ASSERT_TRUE(one_cpu.ok());
  ThreadPool pool(2);
  constexpr int kRuns = 2000;
  std::vector<int> count(2, 0);
  std::atomic<int> bad{0};
  volatile double sink = 0;
  for (int k = 0; k < kRuns; ++k) {
    pool.Run([&](int i, int n) {
      if (n != 2 || count[i] != k) bad.fetch_add(1);
      ++count[i];
      double x = 0;
      for (int j = 0; j < 200; ++j) x += j * 0.5;
      sink = sink + x;
    });
  }
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(count[0], kRuns);
  EXPECT_EQ(count[1], kRuns);
  EXPECT_EQ(pool.runs(), kRuns);
  EXPECT_GT(pool.runs_on_caller(), kRuns / 2);
  // RunConcurrently still runs the indices at the same time: index 0 waits for index 1.
  std::atomic<bool> one_ran{false};
  pool.RunConcurrently([&](int i, int) {
    if (i == 1) one_ran.store(true);
    while (i == 0 && !one_ran.load()) std::this_thread::yield();
  });
  EXPECT_TRUE(one_ran.load());
}

TEST(ThreadPoolTest, ShareTilesTheRangeExactly) {
  for (int64_t total : {0, 1, 5, 15, 16, 17, 100, 1000, 4099}) {
    for (int n = 1; n <= 9; ++n) {
      for (int64_t granule : {1, 4, 16}) {
        int64_t expected_begin = 0;
        int64_t biggest = 0, smallest = total + 1;
        for (int i = 0; i < n; ++i) {
          int64_t begin = -1, end = -1;
          ThreadPool::Share(total, i, n, granule, &begin, &end);
          SCOPED_TRACE(testing::Message() << "total " << total << " share " << i << "/" << n
                                          << " granule " << granule);
          EXPECT_EQ(begin, expected_begin);
          EXPECT_LE(begin, end);
          EXPECT_LE(end, total);
          if (end != total) {
            EXPECT_EQ(end % granule, 0);
          }
          expected_begin = end;
          biggest = std::max(biggest, end - begin);
          smallest = std::min(smallest, end - begin);
        }
        EXPECT_EQ(expected_begin, total) << "total " << total << " n " << n;
        // Near-equal: share sizes in granules differ by at most one (the final granule may
        // be partial, hence the strict bound of two granules in elements).
        EXPECT_LT(biggest - smallest, 2 * granule) << "total " << total << " n " << n;
      }
    }
  }
}

}  // namespace
}  // namespace tessera
