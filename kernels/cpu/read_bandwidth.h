// Measures the machine's memory read bandwidth: the roofline that memory-bound kernels (decode
// matmuls) are reported against. Streams a buffer much larger than the last-level cache with
// `n_threads` threads, each summing its own contiguous share, best of `repeats` passes. The
// buffer is in 2 MiB pages where the kernel offers them (kernels/cpu/huge_pages.h).
#ifndef TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_
#define TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_

#include <cstdint>
#include <memory>

#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/thread_pool.h"

namespace tessera {

// A buffer to stream, allocated once, so the bandwidth can be measured again and again between
// other work (tessera bench measures it between chunks of decode steps: on a shared machine the
// bandwidth moves within seconds, and a roofline measured minutes apart says little).
class ReadBandwidthProbe {
 public:
  // Maps `buffer_bytes` (2 MiB pages where offered) and first-touches each thread's share on
  // that thread of `pool` (pages land near the thread that reads them).
  ReadBandwidthProbe(ThreadPool* pool, int64_t buffer_bytes);
  // Best of `passes` streaming passes over the buffer: bytes per second.
  double Measure(int passes);

 private:
  ThreadPool* pool_;
  int64_t n_ = 0;  // uint64_t words
  std::shared_ptr<HugePageMapping> mapping_;
  std::unique_ptr<uint64_t[]> fallback_;
  uint64_t* buf_ = nullptr;
};

// Bytes per second. `buffer_bytes` should be several times the last-level cache (default 1 GiB).
double MeasureReadBandwidth(ThreadPool* pool, int64_t buffer_bytes = int64_t{1} << 30,
                            int repeats = 5);

// Seconds for a cache line to go from the pool's thread 0 to thread 1 and back (a flag passed
// to and fro `round_trips` times, in five batches; the median batch): how far apart the two
// cores are, which every fork-join of a decode step pays a few times. On a VM it changes
// with where the host runs the vCPUs: the 2-vCPU EPYC VM of bench/RESULTS.md reads ~55 ns
// with both on one die (and ~33 GB/s of read bandwidth), ~330 ns on two dies (50-60 GB/s).
// 0 for a pool of one thread.
double MeasureThreadRoundTrip(ThreadPool* pool, int round_trips = 1000);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_
