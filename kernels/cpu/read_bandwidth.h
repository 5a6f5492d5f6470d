// Measures the machine's memory read bandwidth: the roofline that memory-bound kernels (decode
// matmuls) are reported against. Streams a buffer much larger than the last-level cache with
// `n_threads` threads, each summing its own contiguous share, best of `repeats` passes. The
// buffer is in 2 MiB pages where the kernel offers them (kernels/cpu/huge_pages.h).
#ifndef TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_
#define TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace tessera {

// Bytes per second. `buffer_bytes` should be several times the last-level cache (default 1 GiB).
double MeasureReadBandwidth(ThreadPool* pool, int64_t buffer_bytes = int64_t{1} << 30,
                            int repeats = 5);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_READ_BANDWIDTH_H_
