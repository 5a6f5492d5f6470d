#include "coordinator/scheduler.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tessera {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// One input of the step being built: `n_tokens` of `seq` from seq->computed on.
struct Scheduler::Planned {
  SchedulerSequence* seq;
  int64_t n_tokens;
};

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(StepExecutor* executor,
                                                             SchedulerOptions options) {
  auto bad = [](const std::string& field, int64_t value, const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheduler option ", field, " = ", value, " is invalid: ", why));
  };
  if (executor == nullptr) return absl::InvalidArgumentError("scheduler: no executor given");
  if (options.tokenizer == nullptr) {
    return absl::InvalidArgumentError("scheduler: no tokenizer given (needed to detokenize)");
  }
  if (options.context_length < 2) {
    return bad("context_length", options.context_length, "must be at least 2");
  }
  if (options.max_waiting < 1) return bad("max_waiting", options.max_waiting, "must be >= 1");
  if (options.max_step_tokens < 1) {
    return bad("max_step_tokens", options.max_step_tokens, "must be >= 1");
  }
  if (options.max_running < 1 || options.max_running > options.max_step_tokens) {
    return bad("max_running", options.max_running,
               "must be in [1, max_step_tokens] (every running sequence decodes each step)");
  }
  if (options.prefill_chunk < 1) {
    return bad("prefill_chunk", options.prefill_chunk, "must be >= 1");
  }
  if (options.idle_poll <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("scheduler option idle_poll must be positive");
  }
  std::unique_ptr<Scheduler> s(new Scheduler(executor, std::move(options)));
  s->thread_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

Scheduler::Scheduler(StepExecutor* executor, SchedulerOptions options)
    : executor_(executor), options_(std::move(options)) {}

Scheduler::~Scheduler() { Stop(); }

std::string Scheduler::Name() const { return absl::StrCat("replica ", options_.replica); }

absl::Status Scheduler::Submit(ScheduledRequest request) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError(absl::StrCat(Name(), " is shutting down"));
  }
  const ExecutorState state = executor_->state();
  if (!state.ready) {
    return absl::UnavailableError(absl::StrCat(Name(), " is not ready: ", state.description));
  }
  absl::StatusOr<SequencePtr> seq = SchedulerSequence::Create(
      std::move(request), options_.tokenizer, options_.context_length);
  if (!seq.ok()) return seq.status();
  const SchedulerSequence& s = **seq;
  const int64_t blocks = CeilDiv(s.max_kv_tokens(), state.kv_block_tokens);
  if (blocks > state.kv_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request '", s.request().id, "': a prompt of ", s.n_prompt(), " tokens with max_tokens = ",
        s.max_tokens(), " needs up to ", blocks, " KV blocks of ", state.kv_block_tokens,
        " tokens; ", Name(), " holds ", state.kv_blocks, " blocks in all, so it can never fit ",
        "(ask for fewer tokens)"));
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError(absl::StrCat(Name(), " is shutting down"));
  if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Name(), ": the request queue is full (", waiting_.size(),
                     " requests waiting, max_waiting = ", options_.max_waiting, "); retry later"));
  }
  waiting_.push_back(*std::move(seq));
  ++submissions_;
  return absl::OkStatus();
}

SchedulerLoad Scheduler::load() const {
  const ExecutorState state = executor_->state();
  SchedulerLoad load;
  absl::MutexLock lock(&mu_);
  load.ready = state.ready && !stopping_;
  load.epoch = state.epoch;
  load.state = stopping_ ? "shutting down" : state.description;
  load.waiting = static_cast<int64_t>(waiting_.size());
  load.running = published_running_;
  load.kv_blocks_used = published_kv_used_;
  load.preemptions = preemptions_;
  load.steps = steps_;
  load.kv_blocks_total = published_epoch_ == state.epoch && published_kv_total_ > 0
                             ? published_kv_total_
                             : state.kv_blocks;
  if (published_epoch_ != state.epoch) load.kv_blocks_used = 0;
  return load;
}

void Scheduler::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Loop() {
  uint64_t seen_submissions = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      seen_submissions = submissions_;
    }
    const ExecutorState state = executor_->state();
    const bool usable = state.ready && !(state.epoch == epoch_ && epoch_failed_);
    if (!usable) {
      const absl::Time now = absl::Now();
      if (!running_.empty()) {
        FailRunning(absl::UnavailableError(absl::StrCat(
            Name(), " stopped serving (", state.description,
            "); the request was running on it and is lost")));
      }
      if (not_ready_since_ == absl::InfiniteFuture()) not_ready_since_ = now;
      DropCancelled();
      if (now - not_ready_since_ > options_.not_ready_timeout) {
        std::deque<SequencePtr> expired;
        {
          absl::MutexLock lock(&mu_);
          expired.swap(waiting_);
        }
        for (SequencePtr& seq : expired) {
          seq->Fail(absl::UnavailableError(absl::StrCat(
              Name(), " has not been ready for ", absl::FormatDuration(now - not_ready_since_),
              " (", state.description, "); the request waited for it in vain")));
        }
      }
      PublishLoad();
      executor_->WaitReady(options_.idle_poll);
      continue;
    }
    not_ready_since_ = absl::InfiniteFuture();
    if (mirror_ == nullptr || state.epoch != epoch_) StartEpoch(state);
    if (RunStep()) continue;
    // Idle: wait for a submission (or stop), checking for cancellations now and then.
    absl::MutexLock lock(&mu_);
    auto woken = [this, seen_submissions]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || submissions_ != seen_submissions;
    };
    mu_.AwaitWithTimeout(absl::Condition(&woken), options_.idle_poll);
  }

  // Shutting down.
  const absl::Status down = absl::UnavailableError(
      absl::StrCat(Name(), " is shutting down; the request did not finish"));
  FailRunning(down);
  std::deque<SequencePtr> waiting;
  {
    absl::MutexLock lock(&mu_);
    waiting.swap(waiting_);
  }
  for (SequencePtr& seq : waiting) seq->Fail(down);
  PublishLoad();
}

void Scheduler::StartEpoch(const ExecutorState& state) {
  if (!running_.empty()) {
    FailRunning(absl::UnavailableError(
        absl::StrCat(Name(), " restarted (epoch ", epoch_, " -> ", state.epoch,
                     "); the request was running on it and is lost")));
  }
  mirror_ = std::make_unique<KvBlockManager>(state.kv_blocks, state.kv_block_tokens);
  epoch_ = state.epoch;
  epoch_failed_ = false;
  step_id_ = 0;
  to_free_.clear();
  PublishLoad();
}

void Scheduler::FailRunning(const absl::Status& status) {
  for (SequencePtr& seq : running_) seq->Fail(status);
  running_.clear();
  to_free_.clear();
  // The workers dropped the epoch's sequences; the mirror is rebuilt for the next epoch.
  mirror_.reset();
  epoch_failed_ = true;
}

void Scheduler::Release(SchedulerSequence& seq) {
  if (mirror_ != nullptr) mirror_->Free(seq.id);
  to_free_.push_back(seq.id);
}

void Scheduler::PreemptNewest() {
  SequencePtr seq = std::move(running_.back());
  running_.pop_back();
  Release(*seq);
  seq->Preempted();
  absl::MutexLock lock(&mu_);
  waiting_.push_front(std::move(seq));
  ++preemptions_;
}

void Scheduler::DropCancelled() {
  for (SequencePtr& seq : running_) {
    if (!seq->stream().cancelled()) continue;
    seq->Fail(seq->stream().cancel_reason());
    Release(*seq);
    seq.reset();
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  std::vector<SequencePtr> dropped;
  {
    absl::MutexLock lock(&mu_);
    for (SequencePtr& seq : waiting_) {
      if (seq->stream().cancelled()) dropped.push_back(std::move(seq));
    }
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), nullptr), waiting_.end());
  }
  for (SequencePtr& seq : dropped) seq->Fail(seq->stream().cancel_reason());
}

void Scheduler::PublishLoad() {
  const int64_t used = mirror_ != nullptr ? mirror_->used_blocks() : 0;
  const int64_t total = mirror_ != nullptr ? mirror_->n_blocks() : 0;
  int64_t waiting = 0;
  {
    absl::MutexLock lock(&mu_);
    published_running_ = static_cast<int64_t>(running_.size());
    published_kv_used_ = used;
    published_kv_total_ = total;
    published_epoch_ = epoch_;
    waiting = static_cast<int64_t>(waiting_.size());
  }
  if (options_.metrics != nullptr) {
    options_.metrics->SetQueue(options_.replica, waiting, static_cast<int64_t>(running_.size()));
    options_.metrics->SetKvBlocks(options_.replica, used, total);
  }
}

bool Scheduler::RunStep() {
  DropCancelled();
  const int64_t bt = mirror_->block_tokens();
  std::vector<Planned> plan;
  int64_t budget = 0;
  int64_t free = 0;

  // Running sequences first: every decode, then the prefills in progress, oldest first. A
  // decode that cannot get its next block, or a set of prefills none of which can move,
  // preempts the newest running sequence and the plan starts over.
  while (true) {
    plan.clear();
    budget = options_.max_step_tokens;
    free = mirror_->free_blocks();
    bool replan = false;
    for (const SequencePtr& seq : running_) {
      if (!seq->decoding()) continue;
      const int64_t need = mirror_->BlocksNeeded(seq->id, seq->computed + 1);
      if (need > free) {
        replan = true;
        break;
      }
      plan.push_back({seq.get(), 1});
      free -= need;
      budget -= 1;
    }
    if (replan) {
      PreemptNewest();
      continue;
    }
    for (const SequencePtr& seq : running_) {
      if (seq->decoding() || budget == 0) continue;
      const int64_t held = static_cast<int64_t>(mirror_->BlockTable(seq->id).size());
      int64_t n = std::min({seq->pending(), options_.prefill_chunk, budget});
      n = std::min(n, (held + free) * bt - seq->computed);
      if (n <= 0) continue;
      free -= mirror_->BlocksNeeded(seq->id, seq->computed + n);
      budget -= n;
      plan.push_back({seq.get(), n});
    }
    if (plan.empty() && !running_.empty()) {
      PreemptNewest();
      continue;
    }
    break;
  }

  // Blocks the running prefills still need after this step.
  int64_t committed = 0;
  for (const SequencePtr& seq : running_) {
    if (seq->decoding()) continue;
    int64_t planned = 0;
    for (const Planned& p : plan) {
      if (p.seq == seq.get()) planned = p.n_tokens;
    }
    committed += mirror_->BlocksNeeded(seq->id, static_cast<int64_t>(seq->tokens().size())) -
                 mirror_->BlocksNeeded(seq->id, seq->computed + planned);
  }

  // Admission, first come first served: the head of the queue goes in when the cache holds its
  // whole prefill besides what the running prefills still need and one block of headroom per
  // running sequence; nobody overtakes it.
  const absl::Time now = absl::Now();
  std::vector<SequencePtr> refused;
  {
    absl::MutexLock lock(&mu_);
    while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running &&
           budget > 0) {
      SchedulerSequence& seq = *waiting_.front();
      if (running_.empty() && CeilDiv(seq.max_kv_tokens(), bt) > mirror_->n_blocks()) {
        // Only after an epoch with a smaller cache: Submit checks this too.
        refused.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
        continue;
      }
      const int64_t prefill = static_cast<int64_t>(seq.tokens().size());
      const int64_t headroom = static_cast<int64_t>(running_.size());
      if (CeilDiv(prefill, bt) + committed + headroom > free) break;
      const int64_t n = std::min({prefill, options_.prefill_chunk, budget});
      seq.Admitted(next_seq_id_++, now);
      free -= CeilDiv(n, bt);
      committed += CeilDiv(prefill, bt) - CeilDiv(n, bt);
      budget -= n;
      plan.push_back({&seq, n});
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }
  for (SequencePtr& seq : refused) {
    seq->Fail(absl::ResourceExhaustedError(absl::StrCat(
        "request '", seq->request().id, "' needs up to ", CeilDiv(seq->max_kv_tokens(), bt),
        " KV blocks; ", Name(), " now holds ", mirror_->n_blocks(), " in all")));
  }
  if (plan.empty() && to_free_.empty()) {
    PublishLoad();
    return false;
  }
  // (An empty plan with sequences to free is a free-only step: the workers release the KV
  // blocks of finished or cancelled sequences now rather than with the next request.)

  // The step, with the mirror doing what every rank's engine will do.
  v1::Step step;
  step.set_step_id(++step_id_);
  for (SeqId id : to_free_) step.add_free_seq_ids(id);
  to_free_.clear();
  int64_t n_tokens = 0;
  bool has_prefill = false;
  for (const Planned& p : plan) {
    SchedulerSequence& seq = *p.seq;
    v1::SeqInput* in = step.add_inputs();
    in->set_seq_id(seq.id);
    in->set_position(static_cast<uint32_t>(seq.computed));
    const auto first = seq.tokens().begin() + seq.computed;
    in->mutable_tokens()->Add(first, first + p.n_tokens);
    in->set_sample(seq.computed + p.n_tokens == static_cast<int64_t>(seq.tokens().size()));
    if (seq.computed == 0) *in->mutable_sampling() = seq.SamplingProto();
    const absl::Status reserved = mirror_->Reserve(seq.id, seq.computed + p.n_tokens);
    if (!reserved.ok()) {
      // A planning bug; the workers have seen nothing of this step yet.
      FailRunning(absl::InternalError(absl::StrCat(Name(), ": KV mirror refused step ",
                                                   step.step_id(), ": ", reserved.message())));
      PublishLoad();
      return true;
    }
    const std::vector<int32_t>& table = mirror_->BlockTable(seq.id);
    in->mutable_block_table()->Add(table.begin(), table.end());
    n_tokens += p.n_tokens;
    has_prefill = has_prefill || p.n_tokens > 1 || !seq.decoding();
  }

  const absl::Time started = absl::Now();
  absl::StatusOr<v1::StepResult> result = executor_->Execute(step);
  const absl::Time done = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    ++steps_;
  }
  if (options_.metrics != nullptr && !plan.empty()) {
    options_.metrics->Step(options_.replica, static_cast<int64_t>(plan.size()), n_tokens,
                           has_prefill, absl::ToDoubleSeconds(done - started));
  }
  if (!result.ok()) {
    FailRunning(absl::UnavailableError(
        absl::StrCat(Name(), " failed at step ", step.step_id(), " of epoch ", epoch_, ": ",
                     result.status().message(), "; the request was running on it and is lost")));
    PublishLoad();
    return true;
  }

  std::unordered_map<SeqId, const v1::Token*> sampled;
  for (const v1::SampledSequence& s : result->sampled()) sampled[s.seq_id()] = &s.token();
  for (const Planned& p : plan) {
    SchedulerSequence& seq = *p.seq;
    seq.computed += p.n_tokens;
    (void)mirror_->SetLength(seq.id, seq.computed);  // within the reservation just made
    if (seq.pending() != 0) continue;  // a prefill chunk that does not end the prompt
    auto it = sampled.find(seq.id);
    absl::StatusOr<bool> finished =
        it == sampled.end()
            ? absl::InternalError(absl::StrCat(Name(), ": step ", step.step_id(),
                                               " returned no token for sequence ", seq.id))
            : seq.OnToken(*it->second, done);
    if (finished.ok() && !*finished) continue;
    if (!finished.ok()) seq.Fail(finished.status());
    Release(seq);
    for (SequencePtr& r : running_) {
      if (r.get() == &seq) r.reset();
    }
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  PublishLoad();
  return true;
}

}  // namespace tessera
