// A persistent pool of worker threads for data-parallel kernels.
//
// Run() hands the same function to every thread (the caller takes index 0) and returns when
// all have finished: the fork-join shape of a matmul split by rows. Threads are created once
// and wait between calls, so a decode step pays no thread start-up. A waiting thread first
// spins for a short while (a decode step issues the next Run within microseconds, and a
// condition-variable wake-up costs tens of them), then sleeps on a condition variable so an
// idle pool uses no CPU.
//
// Thread-safety: Run() may be called from one thread at a time (the pool is owned by one
// engine); it is not re-entrant. fn must not throw.
#ifndef TESSERA_KERNELS_CPU_THREAD_POOL_H_
#define TESSERA_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // n_threads >= 1 counts the caller; n_threads - 1 threads are started. Values < 1 mean 1.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on each thread and waits for all of them.
  void Run(const std::function<void(int thread_index, int n_threads)>& fn);

  // [begin, end) of the i-th of n near-equal contiguous shares of [0, total). Share bounds are
  // multiples of `granule` except the final end (= total); the shares tile [0, total) exactly,
  // in order, and may be empty when there are fewer granules than shares.
  static void Share(int64_t total, int i, int n, int64_t granule, int64_t* begin, int64_t* end);

 private:
  void WorkerLoop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  // The members are grouped by who writes them, a cache line per group: a Run costs a few
  // transfers of lines between the cores, which on a VM whose two vCPUs sit on different
  // dies take ~150 ns each (bench/RESULTS.md, 2026-12-07, fourth session).
  // Written by the caller of Run: the job, then the generation that publishes it.
  alignas(64) const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped once per Run
  std::atomic<bool> stop_{false};
  // Written by the workers: how many are still running the current job.
  alignas(64) std::atomic<int> pending_{0};
  // Touched only by a thread about to sleep and by whoever has to wake it: the lock and
  // condition variables are used only when a thread sleeps (seq_cst flags against lost
  // wake-ups), not on every Run.
  alignas(64) std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_THREAD_POOL_H_
