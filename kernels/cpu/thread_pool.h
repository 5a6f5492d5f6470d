// A persistent pool of worker threads for data-parallel kernels.
//
// Run() hands the same function to every thread (the caller takes index 0) and returns when
// all have finished: the fork-join shape of a matmul split by rows. Threads are created once
// and wait between calls, so a decode step pays no thread start-up. A waiting thread first
// spins for a short while (a decode step issues the next Run within microseconds, and a
// condition-variable wake-up costs tens of them), then sleeps on a condition variable so an
// idle pool uses no CPU.
//
// When the workers do not get CPUs of their own (another process keeps a core busy, and the
// OS puts a worker on the caller's core), each Run would wait out a spin budget twice: the
// caller's while the worker cannot run, then the worker's while the caller cannot. The pool
// notices workers that start late, on the caller's CPU, on back-to-back Runs and then runs
// the jobs on the caller alone, one index after another, for a while before it tries the
// workers again (on a 2-CPU VM with one CPU taken, SmolLM2's decode on 2 threads went from 84
// to 212-214 tokens/s; 1 thread gives 224).
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

  // Calls fn(thread_index, n_threads) once for each index and waits for all of them: each on
  // its own thread, or, while the workers are found starting late (see above), all on the
  // caller in index order. fn's indices must not wait for each other.
  void Run(const std::function<void(int thread_index, int n_threads)>& fn);
  // As Run, always on n_threads threads at once: for jobs whose indices wait for each other.
  void RunConcurrently(const std::function<void(int thread_index, int n_threads)>& fn);

  // How many threads a Run issued now would run on: 1 while the jobs go to the caller alone
  // (a job may then plan one share instead of size() of them, and let indices beyond it
  // return at once).
  int ParallelismNow() const;

  // Runs so far, and how many of them ran on the caller alone (workers found starting late).
  int64_t runs() const { return runs_; }
  int64_t runs_on_caller() const { return runs_on_caller_; }

  // What a thread does on each turn of a spin-wait for another (pause; elsewhere a yield).
  static void Relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  // [begin, end) of the i-th of n near-equal contiguous shares of [0, total). Share bounds are
  // multiples of `granule` except the final end (= total); the shares tile [0, total) exactly,
  // in order, and may be empty when there are fewer granules than shares.
  static void Share(int64_t total, int i, int n, int64_t granule, int64_t* begin, int64_t* end);

 private:
  void WorkerLoop(int index);
  // Publishes fn (at now_ns, steady clock) to the workers, runs index 0 and waits.
  void RunOnThreads(const std::function<void(int, int)>& fn, int64_t now_ns);

  const int n_threads_;
  std::vector<std::thread> workers_;
  // The members are grouped by who writes them, a cache line per group: a Run costs a few
  // transfers of lines between the cores, which on a VM whose two vCPUs sit on different
  // dies take ~150 ns each (bench/RESULTS.md, 2026-12-07, fourth session).
  // Written by the caller of Run: the job, then the generation that publishes it.
  alignas(64) const std::function<void(int, int)>* job_ = nullptr;
  int64_t publish_ns_ = 0;               // steady clock when the job was published
  int publish_cpu_ = -1;                 // and the CPU the caller published it from
  std::atomic<uint64_t> generation_{0};  // bumped once per Run
  std::atomic<bool> stop_{false};
  // Written by the workers: how many are still running the current job, and how many
  // started it more than kLateStart after it was published.
  alignas(64) std::atomic<int> pending_{0};
  std::atomic<int> late_starts_{0};
  // The caller's own bookkeeping.
  alignas(64) int64_t runs_ = 0;
  int64_t runs_on_caller_ = 0;
  int64_t last_end_ns_ = 0;         // when the previous Run returned
  int late_runs_ = 0;               // back-to-back Runs with a late start since late_since_ns_
  int on_time_runs_ = 0;            // and those on time
  int64_t late_since_ns_ = 0;
  int64_t on_caller_until_ns_ = 0;  // Runs stay on the caller until then
  int64_t on_caller_ns_ = 0;        // the length of that stretch
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
