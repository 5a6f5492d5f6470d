#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TESSERA_CPU_RELAX() _mm_pause()
#else
#define TESSERA_CPU_RELAX() std::this_thread::yield()
#endif

namespace tessera {
namespace {

// How long a waiting thread spins before it sleeps. Long enough to cover the gap between
// the matmuls of one decode step, short enough that an idle pool stops burning a core (the
// machine may be shared) after a fraction of a millisecond.
constexpr auto kSpin = std::chrono::microseconds(200);

// Spins until pred() or the spin budget runs out; true if pred() became true.
template <typename Pred>
bool SpinUntil(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    TESSERA_CPU_RELAX();
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
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;  // no worker reads it until the generation below changes
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
