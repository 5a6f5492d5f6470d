// The machine measurements `tessera bench` reports next to its figures: the read bandwidth
// probe and the round trip of a cache line between two of the pool's threads.
#include "kernels/cpu/read_bandwidth.h"

#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"

namespace tessera {
namespace {

TEST(ReadBandwidthTest, ProbeMeasuresAPositiveBandwidthAgainAndAgain) {
  ThreadPool pool(2);
  ReadBandwidthProbe probe(&pool, int64_t{8} << 20);
  for (int i = 0; i < 3; ++i) {
    const double bw = probe.Measure(2);
    EXPECT_TRUE(std::isfinite(bw));
    // More than 10 MB/s and less than 100 TB/s: bytes per second, not some other unit.
    EXPECT_GT(bw, 1e7);
    EXPECT_LT(bw, 1e14);
  }
}

TEST(ThreadRoundTripTest, ZeroWithOneThread) {
  ThreadPool pool(1);
  EXPECT_EQ(MeasureThreadRoundTrip(&pool), 0.0);
  ThreadPool two(2);
  EXPECT_EQ(MeasureThreadRoundTrip(&two, 0), 0.0);
}

TEST(ThreadRoundTripTest, SecondsBetweenTwoThreads) {
  for (int n : {2, 3}) {
    ThreadPool pool(n);
    for (int rounds : {1, 7, 1000}) {
      const double s = MeasureThreadRoundTrip(&pool, rounds);
      // A cache line between two cores and back takes tens to hundreds of nanoseconds, and
      // milliseconds where other processes hold the CPUs (the waits then give the CPU away):
      // seconds, positive, and bounded.
      EXPECT_GT(s, 1e-9) << n << " threads, " << rounds << " round trips";
      EXPECT_LT(s, 0.5) << n << " threads, " << rounds << " round trips";
    }
  }
}

}  // namespace
}  // namespace tessera
