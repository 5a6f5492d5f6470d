// A persistent pool of worker threads for data-parallel kernels.
//
// Run() hands the same function to every thread (the caller takes index 0) and returns when
// all have finished: the fork-join shape of a matmul split by rows. Threads are created once
// and park on a condition variable between calls, so a decode step pays no thread start-up.
//
// Thread-safety: Run() may be called from one thread at a time (the pool is owned by one
// engine); it is not re-entrant.
#ifndef TESSERA_KERNELS_CPU_THREAD_POOL_H_
#define TESSERA_KERNELS_CPU_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // n_threads >= 1 counts the caller; n_threads - 1 threads are started.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on each thread and waits for all of them.
  void Run(const std::function<void(int thread_index, int n_threads)>& fn);

  // [begin, end) of the i-th of n near-equal contiguous shares of [0, total), aligned to
  // `granule` (the last share takes the remainder).
  static void Share(int64_t total, int i, int n, int64_t granule, int64_t* begin, int64_t* end);

 private:
  void WorkerLoop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int, int)>* job_ = nullptr;  // guarded by mu_
  uint64_t generation_ = 0;                             // guarded by mu_
  int pending_ = 0;                                     // guarded by mu_
  bool stop_ = false;                                   // guarded by mu_
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_THREAD_POOL_H_
