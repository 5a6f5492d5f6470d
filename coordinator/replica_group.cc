#include "coordinator/replica_group.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

// The device label of metrics: "cuda:0 (NVIDIA H100)" -> "cuda:0".
std::string DeviceLabel(const std::string& device) {
  return device.substr(0, device.find(' '));
}

// Whether `text` mentions `address` as a whole "host:port" (not the prefix of a longer port).
bool Mentions(const std::string& text, const std::string& address) {
  if (address.empty()) return false;
  for (size_t at = text.find(address); at != std::string::npos;
       at = text.find(address, at + 1)) {
    const size_t end = at + address.size();
    if (end == text.size() || !std::isdigit(static_cast<unsigned char>(text[end]))) return true;
  }
  return false;
}

}  // namespace

ReplicaGroup::ReplicaGroup(int replica, const Plan& plan, ReplicaGroupOptions options,
                           std::atomic<uint64_t>* assignment_ids)
    : replica_(replica),
      plan_(plan),
      options_(std::move(options)),
      assignment_ids_(assignment_ids),
      sampler_rank_(static_cast<int>((plan.pp - 1) * plan.tp)),
      slots_(plan.ranks.size()) {
  SetMetricsReady(false);
}

// ---------------------------------------------------------------------------- state

ExecutorState ReplicaGroup::state() const {
  absl::MutexLock lock(&mu_);
  return StateLocked();
}

ExecutorState ReplicaGroup::WaitReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return phase_ == Phase::kReady || phase_ == Phase::kShutdown;
  };
  mu_.AwaitWithTimeout(absl::Condition(&settled), timeout);
  return StateLocked();
}

ExecutorState ReplicaGroup::StateLocked() const {
  ExecutorState s;
  s.ready = phase_ == Phase::kReady;
  s.epoch = epoch_;
  s.kv_blocks = kv_blocks_;
  s.kv_block_tokens = options_.kv_block_tokens;
  const int n = n_ranks();
  switch (phase_) {
    case Phase::kWaiting:
      s.description = absl::StrCat("waiting for workers: ", n_filled(), " of ", n,
                                   " ranks filled");
      if (!last_error_.empty()) absl::StrAppend(&s.description, " (last failure: ", last_error_, ")");
      break;
    case Phase::kAssigning: {
      int prepared = 0;
      for (const Slot& slot : slots_) prepared += slot.prepared.has_value();
      s.description = absl::StrCat("loading: shards assigned, ", prepared, " of ", n,
                                   " ranks prepared");
      break;
    }
    case Phase::kConnecting: {
      int ready = 0;
      for (const Slot& slot : slots_) ready += slot.ready;
      s.description = absl::StrCat("loading: connecting and loading shards, ", ready, " of ", n,
                                   " ranks ready");
      break;
    }
    case Phase::kReady:
      s.description = "ready";
      break;
    case Phase::kFailed:
      s.description = absl::StrCat("failed: ", last_error_, " (forming again in ",
                                   absl::FormatDuration(std::max(retry_at_ - absl::Now(),
                                                           absl::ZeroDuration())),
                                   ")");
      break;
    case Phase::kShutdown:
      s.description = absl::StrCat("shut down: ", shutdown_reason_);
      break;
  }
  return s;
}

v1::ReplicaInfo ReplicaGroup::Info() const {
  absl::MutexLock lock(&mu_);
  v1::ReplicaInfo info;
  info.set_replica(replica_);
  switch (phase_) {
    case Phase::kWaiting:
      info.set_state("waiting_for_workers");
      break;
    case Phase::kAssigning:
    case Phase::kConnecting:
      info.set_state("loading");
      break;
    case Phase::kReady:
      info.set_state("ready");
      break;
    case Phase::kFailed:
    case Phase::kShutdown:
      info.set_state("failed");
      break;
  }
  if (phase_ == Phase::kReady) info.set_kv_blocks_total(static_cast<uint32_t>(kv_blocks_));
  return info;
}

std::string ReplicaGroup::SlotName(int rank) const {
  const RankPlan& p = plan_.ranks[rank];
  std::string name = absl::StrCat("replica ", replica_, ", rank ", rank, " (tp_rank ", p.tp_rank,
                                  ", stage ", p.pp_stage, ")");
  if (slots_[rank].worker) absl::StrAppend(&name, ", ", slots_[rank].worker->name());
  return name;
}

int ReplicaGroup::n_filled() const {
  int n = 0;
  for (const Slot& slot : slots_) n += slot.worker != nullptr;
  return n;
}

bool ReplicaGroup::Holds(int rank, const AttachedWorker* worker, uint64_t assignment_id) const {
  if (rank < 0 || rank >= n_ranks() || slots_[rank].worker.get() != worker) return false;
  return assignment_id == 0 || slots_[rank].assignment_id == assignment_id;
}

void ReplicaGroup::SetMetricsReady(bool ready) const {
  if (options_.metrics != nullptr) options_.metrics->SetReplicaReady(replica_, ready);
}

// ---------------------------------------------------------------------------- slots

int ReplicaGroup::FirstVacantRank() const {
  absl::MutexLock lock(&mu_);
  if (phase_ == Phase::kShutdown) return -1;
  for (int r = 0; r < n_ranks(); ++r) {
    if (!slots_[r].worker) return r;
  }
  return -1;
}

void ReplicaGroup::Fill(int rank, std::shared_ptr<AttachedWorker> worker) {
  absl::MutexLock lock(&mu_);
  if (rank < 0 || rank >= n_ranks() || slots_[rank].worker || phase_ == Phase::kShutdown) {
    return;
  }
  if (options_.metrics != nullptr) {
    const RankPlan& p = plan_.ranks[rank];
    options_.metrics->SetWorkerUp({worker->id(), absl::StrCat(replica_), absl::StrCat(rank),
                                   absl::StrCat(p.pp_stage),
                                   DeviceLabel(worker->registration().device())},
                                  true);
  }
  slots_[rank] = Slot{};
  slots_[rank].worker = std::move(worker);
  // A new worker completes the group: form at once, whatever the retry delay.
  if (n_filled() == n_ranks() && (phase_ == Phase::kWaiting || phase_ == Phase::kFailed)) {
    StartFormation();
  }
}

void ReplicaGroup::WorkerGone(int rank, const AttachedWorker* worker) {
  absl::MutexLock lock(&mu_);
  if (!Holds(rank, worker, 0)) return;
  const std::string name = SlotName(rank);
  if (options_.metrics != nullptr) {
    const RankPlan& p = plan_.ranks[rank];
    options_.metrics->SetWorkerUp({worker->id(), absl::StrCat(replica_), absl::StrCat(rank),
                                   absl::StrCat(p.pp_stage),
                                   DeviceLabel(worker->registration().device())},
                                  false);
  }
  slots_[rank] = Slot{};
  if (phase_ == Phase::kFailed) {
    phase_ = Phase::kWaiting;  // no re-formation until the slot is filled again
    retry_at_ = absl::InfiniteFuture();
  } else {
    Fail(absl::StrCat(name, ": the worker disconnected"));
  }
}

// ---------------------------------------------------------------------------- formation

void ReplicaGroup::StartFormation() {
  phase_ = Phase::kAssigning;
  formation_deadline_ = absl::Now() + options_.formation_timeout;
  retry_at_ = absl::InfiniteFuture();
  const int64_t tp = plan_.tp;
  for (int r = 0; r < n_ranks(); ++r) {
    const RankPlan& p = plan_.ranks[r];
    Slot& slot = slots_[r];
    slot.assignment_id = assignment_ids_->fetch_add(1) + 1;
    slot.prepared.reset();
    slot.ready = false;

    v1::CoordinatorMessage msg;
    v1::Assignment* a = msg.mutable_assignment();
    a->set_assignment_id(slot.assignment_id);
    a->set_model_path(options_.model_path);
    a->set_model_sha(options_.model_sha);
    a->set_replica(static_cast<uint32_t>(replica_));
    a->set_rank(static_cast<uint32_t>(r));
    a->set_tp(static_cast<uint32_t>(plan_.tp));
    a->set_pp(static_cast<uint32_t>(plan_.pp));
    a->set_tp_rank(static_cast<uint32_t>(p.tp_rank));
    a->set_pp_stage(static_cast<uint32_t>(p.pp_stage));
    v1::Shard* s = a->mutable_shard();
    s->set_layer_begin(static_cast<uint32_t>(p.shard.layer_begin));
    s->set_layer_end(static_cast<uint32_t>(p.shard.layer_end));
    s->set_kv_head_begin(static_cast<uint32_t>(p.shard.kv_head_begin));
    s->set_kv_head_end(static_cast<uint32_t>(p.shard.kv_head_end));
    s->set_ff_begin(static_cast<uint32_t>(p.shard.ff_begin));
    s->set_ff_end(static_cast<uint32_t>(p.shard.ff_end));
    s->set_vocab_begin(static_cast<uint32_t>(p.shard.vocab_begin));
    s->set_vocab_end(static_cast<uint32_t>(p.shard.vocab_end));
    for (int64_t t = 0; t < tp; ++t) {
      const ModelShard& peer = plan_.ranks[p.pp_stage * tp + t].shard;
      a->add_vocab_widths(static_cast<uint64_t>(peer.vocab_end - peer.vocab_begin));
    }
    a->set_kv_block_tokens(static_cast<uint32_t>(options_.kv_block_tokens));
    a->set_kv_cache_bytes(static_cast<uint64_t>(options_.kv_cache_bytes));
    a->set_sampler(r == sampler_rank_);
    slot.worker->Send(std::move(msg));
  }
}

void ReplicaGroup::SendConnect() {
  int64_t kv_blocks = -1;
  int smallest = 0;
  for (int r = 0; r < n_ranks(); ++r) {
    const int64_t cap = static_cast<int64_t>(slots_[r].prepared->kv_blocks_capacity());
    if (kv_blocks < 0 || cap < kv_blocks) kv_blocks = cap, smallest = r;
  }
  if (kv_blocks <= 0) {
    Fail(absl::StrCat(SlotName(smallest),
                      ": its KV cache budget holds no block of its shard (raise the worker's "
                      "KV cache memory)"));
    return;
  }
  kv_blocks_ = kv_blocks;
  phase_ = Phase::kConnecting;
  const int64_t tp = plan_.tp, pp = plan_.pp;
  const uint32_t timeout_ms =
      static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Milliseconds(
                                                     options_.communicator_timeout)));
  for (int r = 0; r < n_ranks(); ++r) {
    const RankPlan& p = plan_.ranks[r];
    v1::CoordinatorMessage msg;
    v1::Connect* c = msg.mutable_connect();
    c->set_assignment_id(slots_[r].assignment_id);
    c->set_tensor_group_id(absl::StrCat("replica", replica_, "/stage", p.pp_stage, "/tp"));
    for (int64_t t = 0; t < tp; ++t) {
      c->add_tensor_addresses(slots_[p.pp_stage * tp + t].prepared->tensor_address());
    }
    c->set_pipeline_group_id(absl::StrCat("replica", replica_, "/tp", p.tp_rank, "/pp"));
    for (int64_t s = 0; s < pp; ++s) {
      c->add_pipeline_addresses(slots_[s * tp + p.tp_rank].prepared->pipeline_address());
    }
    c->set_kv_blocks(static_cast<uint64_t>(kv_blocks));
    c->set_timeout_ms(timeout_ms);
    slots_[r].worker->Send(std::move(msg));
  }
}

void ReplicaGroup::OnPrepared(int rank, const AttachedWorker* worker,
                              const v1::Prepared& prepared) {
  absl::MutexLock lock(&mu_);
  if (phase_ != Phase::kAssigning || !Holds(rank, worker, prepared.assignment_id())) return;
  slots_[rank].prepared = prepared;
  for (const Slot& slot : slots_) {
    if (!slot.prepared) return;
  }
  SendConnect();
}

void ReplicaGroup::OnReady(int rank, const AttachedWorker* worker, const v1::Ready& ready) {
  absl::MutexLock lock(&mu_);
  if (phase_ != Phase::kConnecting || !Holds(rank, worker, ready.assignment_id())) return;
  Slot& slot = slots_[rank];
  slot.ready = true;
  slot.worker->set_memory(ready.memory());
  if (options_.metrics != nullptr) {
    const RankPlan& p = plan_.ranks[rank];
    const v1::MemoryUsage& m = ready.memory();
    options_.metrics->SetWorkerMemory(
        {worker->id(), absl::StrCat(replica_), absl::StrCat(rank), absl::StrCat(p.pp_stage),
         DeviceLabel(worker->registration().device())},
        static_cast<int64_t>(m.total_bytes()), static_cast<int64_t>(m.weight_bytes()),
        static_cast<int64_t>(m.kv_cache_bytes()), static_cast<int64_t>(m.workspace_bytes()));
  }
  for (const Slot& s : slots_) {
    if (!s.ready) return;
  }
  phase_ = Phase::kReady;
  ++epoch_;
  consecutive_failures_ = 0;
  last_error_.clear();
  formation_deadline_ = absl::InfiniteFuture();
  SetMetricsReady(true);
}

void ReplicaGroup::OnFailed(int rank, const AttachedWorker* worker, const v1::Failed& failed) {
  absl::MutexLock lock(&mu_);
  if (!Holds(rank, worker, failed.assignment_id())) return;
  Fail(absl::StrCat(SlotName(rank), " failed: ",
                    absl::StatusCodeToString(static_cast<absl::StatusCode>(failed.code())), ": ",
                    NamePeers(failed.message())));
}

void ReplicaGroup::Fail(const std::string& reason) {
  if (phase_ != Phase::kAssigning && phase_ != Phase::kConnecting && phase_ != Phase::kReady) {
    return;
  }
  if (phase_ == Phase::kReady) SetMetricsReady(false);
  last_error_ = reason;
  if (pending_ && pending_->status.ok()) pending_->status = absl::UnavailableError(reason);
  v1::CoordinatorMessage reset;
  reset.mutable_reset()->set_reason(reason);
  auto shared = std::make_shared<const v1::CoordinatorMessage>(std::move(reset));
  for (Slot& slot : slots_) {
    if (slot.worker) slot.worker->Send(shared);
    slot.assignment_id = 0;
    slot.prepared.reset();
    slot.ready = false;
  }
  formation_deadline_ = absl::InfiniteFuture();
  ++consecutive_failures_;
  if (n_filled() == n_ranks()) {
    phase_ = Phase::kFailed;
    absl::Duration delay = options_.retry_delay;
    for (int i = 1; i < consecutive_failures_ && delay < options_.max_retry_delay; ++i) delay *= 2;
    retry_at_ = absl::Now() + std::min(delay, options_.max_retry_delay);
  } else {
    phase_ = Phase::kWaiting;
    retry_at_ = absl::InfiniteFuture();
  }
}

std::string ReplicaGroup::NamePeers(const std::string& message) const {
  std::vector<std::string> owners;
  for (int r = 0; r < n_ranks(); ++r) {
    const Slot& slot = slots_[r];
    if (!slot.prepared || !slot.worker) continue;
    for (const std::string& address :
         {slot.prepared->tensor_address(), slot.prepared->pipeline_address()}) {
      if (Mentions(message, address)) {
        owners.push_back(absl::StrCat(address, " is rank ", r, ", ", slot.worker->name()));
      }
    }
  }
  if (owners.empty()) return message;
  return absl::StrCat(message, " [", absl::StrJoin(owners, "; "), "]");
}

void ReplicaGroup::Tick(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if ((phase_ == Phase::kAssigning || phase_ == Phase::kConnecting) &&
      now >= formation_deadline_) {
    std::vector<std::string> missing;
    for (int r = 0; r < n_ranks(); ++r) {
      const bool answered =
          phase_ == Phase::kAssigning ? slots_[r].prepared.has_value() : slots_[r].ready;
      if (!answered) missing.push_back(SlotName(r));
    }
    Fail(absl::StrCat("replica ", replica_, ": no ",
                      phase_ == Phase::kAssigning ? "Prepared" : "Ready", " within ",
                      absl::FormatDuration(options_.formation_timeout), " from ",
                      absl::StrJoin(missing, "; ")));
  } else if (phase_ == Phase::kFailed && now >= retry_at_ && n_filled() == n_ranks()) {
    StartFormation();
  }
}

void ReplicaGroup::Shutdown(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (phase_ == Phase::kShutdown) return;
  if (phase_ == Phase::kReady) SetMetricsReady(false);
  phase_ = Phase::kShutdown;
  shutdown_reason_ = reason;
  if (pending_ && pending_->status.ok()) {
    pending_->status = absl::UnavailableError(absl::StrCat("replica ", replica_, ": ", reason));
  }
}

// ---------------------------------------------------------------------------- steps

absl::StatusOr<v1::StepResult> ReplicaGroup::Execute(const v1::Step& step) {
  absl::MutexLock lock(&mu_);
  if (phase_ != Phase::kReady) {
    return absl::UnavailableError(
        absl::StrCat("replica ", replica_, " is not ready: ", StateLocked().description));
  }
  if (pending_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "replica ", replica_, ": Execute called while step ", pending_->step_id,
        " is still running (one scheduler thread per replica)"));
  }
  pending_.emplace();
  pending_->step_id = step.step_id();
  pending_->results.resize(slots_.size());
  auto msg = std::make_shared<v1::CoordinatorMessage>();
  *msg->mutable_step() = step;
  std::shared_ptr<const v1::CoordinatorMessage> shared = std::move(msg);
  // Queued under the lock, so a Reset of a failure can never overtake a step on its way.
  for (Slot& slot : slots_) slot.worker->Send(shared);

  const int n = n_ranks();
  auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !pending_->status.ok() || pending_->received == n;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), options_.step_timeout)) {
    std::vector<std::string> silent;
    for (int r = 0; r < n; ++r) {
      if (!pending_->results[r]) silent.push_back(SlotName(r));
    }
    Fail(absl::StrCat("replica ", replica_, ": step ", step.step_id(), " got no answer within ",
                      absl::FormatDuration(options_.step_timeout), " from ",
                      absl::StrJoin(silent, "; ")));
  }
  PendingStep finished = std::move(*pending_);
  pending_.reset();
  if (!finished.status.ok()) return finished.status;
  return std::move(*finished.results[sampler_rank_]);
}

void ReplicaGroup::OnStepResult(int rank, const AttachedWorker* worker,
                                const v1::StepResult& result) {
  absl::MutexLock lock(&mu_);
  if (phase_ != Phase::kReady || !Holds(rank, worker, 0) || !pending_) return;
  if (result.code() != 0) {
    Fail(absl::StrCat(SlotName(rank), " failed step ", result.step_id(), ": ",
                      absl::StatusCodeToString(static_cast<absl::StatusCode>(result.code())),
                      ": ", NamePeers(result.message())));
    return;
  }
  if (result.step_id() != pending_->step_id) {
    Fail(absl::StrCat(SlotName(rank), " answered step ", result.step_id(), " while step ",
                      pending_->step_id, " was running"));
    return;
  }
  if (pending_->results[rank]) return;  // a duplicate answer
  pending_->results[rank] = result;
  ++pending_->received;
}

}  // namespace tessera
