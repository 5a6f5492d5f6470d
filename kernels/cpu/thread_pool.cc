#include "kernels/cpu/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace tessera {
namespace {

// How long a waiting thread spins before it sleeps. Long enough to cover the gap between
// the matmuls of one decode step, short enough that an idle pool stops burning a core (the
// machine may be shared) after a fraction of a millisecond.
constexpr auto kSpin = std::chrono::microseconds(200);

// A worker that starts a job later than this after it was published, on the CPU the caller
// published it from, on a Run issued right after the previous one, is sharing the caller's
// CPU. Once such Runs have gone on for kLateFor (at least kLateRuns of them, and never fewer
// than the Runs on time since the first), the jobs go to the caller for kOnCaller. A shorter
// stretch is left to the OS: a worker that finished its share a chunk ahead of the caller may
// have gone to sleep and been woken onto the caller's CPU, from where the OS soon moves it
// (SmolLM2's 16-sequence decode, counting every late Run of the last 16: 4 of them sent the
// jobs to the caller in 4 of 6 runs on a healthy 2-CPU VM).
constexpr int64_t kLateStartNs = 50'000;
constexpr int kLateRuns = 8;
constexpr int64_t kLateForNs = 10'000'000;
// Found late again soon after (within kOnCallerMin) a stretch on the caller ended, the pool
// doubles the next stretch, up to kOnCallerMax.
constexpr int64_t kOnCallerMinNs = 100'000'000, kOnCallerMaxNs = 3'200'000'000;
// Runs issued within this of the previous one count (longer gaps let the workers sleep).
constexpr int64_t kBackToBackNs = 20'000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Spins until pred() or the spin budget runs out; true if pred() became true.
template <typename Pred>
bool SpinUntil(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    ThreadPool::Relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Run(const std::function<void(int, int)>& fn) {
  ++runs_;
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  const int64_t start = NowNs();
  if (start < on_caller_until_ns_) {
    ++runs_on_caller_;
    for (int i = 0; i < n_threads_; ++i) fn(i, n_threads_);
    last_end_ns_ = NowNs();
    return;
  }
  const bool back_to_back = start - last_end_ns_ < kBackToBackNs;
  RunOnThreads(fn, start);
  const int late = late_starts_.exchange(0, std::memory_order_relaxed);
  last_end_ns_ = NowNs();
  if (!back_to_back) return;
  if (late > 0) {
    if (late_runs_ == 0) late_since_ns_ = start;
    ++late_runs_;
  } else if (late_runs_ > 0 && ++on_time_runs_ >= late_runs_) {
    late_runs_ = on_time_runs_ = 0;
  }
  if (late_runs_ >= kLateRuns && last_end_ns_ - late_since_ns_ >= kLateForNs) {
    const bool again = on_caller_until_ns_ > 0 &&
                       last_end_ns_ - on_caller_until_ns_ < kOnCallerMinNs;
    on_caller_ns_ = again ? std::min(2 * on_caller_ns_, kOnCallerMaxNs) : kOnCallerMinNs;
    on_caller_until_ns_ = last_end_ns_ + on_caller_ns_;
    late_runs_ = on_time_runs_ = 0;
  }
}

int ThreadPool::ParallelismNow() const {
  return n_threads_ > 1 && NowNs() < on_caller_until_ns_ ? 1 : n_threads_;
}

void ThreadPool::RunConcurrently(const std::function<void(int, int)>& fn) {
  ++runs_;
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  RunOnThreads(fn, NowNs());
  late_starts_.store(0, std::memory_order_relaxed);
  last_end_ns_ = NowNs();
}

void ThreadPool::RunOnThreads(const std::function<void(int, int)>& fn, int64_t now_ns) {
  job_ = &fn;  // no worker reads it until the generation below changes
  publish_ns_ = now_ns;
  publish_cpu_ = sched_getcpu();
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes job_ and pending_
  // A worker about to sleep counts itself (seq_cst) before it checks the generation, so
  // either it sees the new one or this sees it counted and wakes it.
  if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    start_cv_.notify_all();
  }
  fn(0, n_threads_);
  if (SpinUntil([this] { return pending_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  caller_sleeping_.store(true, std::memory_order_seq_cst);
  done_cv_.wait(lock, [this] { return pending_.load(std::memory_order_seq_cst) == 0; });
  caller_sleeping_.store(false, std::memory_order_relaxed);
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto changed = [&] { return generation_.load(std::memory_order_seq_cst) != seen; };
    if (!SpinUntil(changed)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
      start_cv_.wait(lock, changed);
      sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    if (NowNs() - publish_ns_ > kLateStartNs && sched_getcpu() == publish_cpu_) {
      late_starts_.fetch_add(1, std::memory_order_relaxed);
    }
    (*job_)(index, n_threads_);
    // The last one out wakes the caller if it went to sleep: it sets its flag (seq_cst) before
    // it checks pending_, so either it sees 0 or this sees the flag. Taking the lock orders the
    // notify after the caller's check.
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_sleeping_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::Share(int64_t total, int i, int n, int64_t granule, int64_t* begin, int64_t* end) {
  if (granule < 1) granule = 1;
  if (n < 1) n = 1;
  const int64_t units = (total + granule - 1) / granule;  // granules, the last maybe partial
  const int64_t base = units / n, extra = units % n;
  // The first `extra` shares get one more granule.
  const int64_t u0 = i * base + std::min<int64_t>(i, extra);
  const int64_t u1 = u0 + base + (i < extra ? 1 : 0);
  *begin = std::min(total, u0 * granule);
  *end = std::min(total, u1 * granule);
}

}  // namespace tessera
