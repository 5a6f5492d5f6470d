#include "coordinator/cluster.h"

#include <sys/stat.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

// The identity of the model file as the coordinator sees it ("" if it cannot stat it: the
// workers may hold it at the same path on other machines).
std::string FileIdentity(const std::string& path) {
  struct stat st;
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(static_cast<int64_t>(st.st_size), ":", static_cast<int64_t>(st.st_mtime));
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

const char* MessageName(const v1::WorkerMessage& msg) {
  switch (msg.msg_case()) {
    case v1::WorkerMessage::kRegister: return "Register";
    case v1::WorkerMessage::kPrepared: return "Prepared";
    case v1::WorkerMessage::kReady: return "Ready";
    case v1::WorkerMessage::kFailed: return "Failed";
    case v1::WorkerMessage::kStepResult: return "StepResult";
    case v1::WorkerMessage::MSG_NOT_SET: break;
  }
  return "an empty message";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Create(ClusterOptions options) {
  auto positive = [](const char* field, int64_t v) -> absl::Status {
    if (v >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("cluster option ", field, " must be at least 1, got ", v));
  };
  for (const auto& [field, v] :
       {std::pair<const char*, int64_t>{"tp", options.tp}, {"pp", options.pp},
        {"replicas", options.replicas}, {"kv_block_tokens", options.kv_block_tokens}}) {
    absl::Status s = positive(field, v);
    if (!s.ok()) return s;
  }
  if (options.kv_cache_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cluster option kv_cache_bytes must be >= 0 (0: the worker's default), got ",
        options.kv_cache_bytes));
  }
  for (const auto& [field, d] : {std::pair<const char*, absl::Duration>{
                                     "communicator_timeout", options.communicator_timeout},
                                 {"step_timeout", options.step_timeout},
                                 {"formation_timeout", options.formation_timeout}}) {
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(absl::StrCat("cluster option ", field,
                                                     " must be positive, got ",
                                                     absl::FormatDuration(d)));
    }
  }
  absl::StatusOr<Plan> plan = LayoutPlan(options.config, options.weight_types, options.tp,
                                         options.pp, options.plan_options);
  if (!plan.ok()) {
    return absl::Status(
        plan.status().code(),
        absl::StrCat("cannot split ",
                     options.model_path.empty() ? options.config.name : options.model_path,
                     " into TP=", options.tp, " x PP=", options.pp, ": ",
                     plan.status().message()));
  }
  if (plan->ranks.size() != static_cast<size_t>(options.tp * options.pp)) {
    return absl::InternalError(absl::StrCat("the planner returned ", plan->ranks.size(),
                                            " ranks for TP=", options.tp, " x PP=", options.pp));
  }
  return std::unique_ptr<Cluster>(new Cluster(std::move(options), *std::move(plan)));
}

Cluster::Cluster(ClusterOptions options, Plan plan)
    : options_(std::move(options)), plan_(std::move(plan)) {
  ReplicaGroupOptions g;
  g.model_path = options_.model_path;
  g.model_sha = FileIdentity(options_.model_path);
  g.kv_block_tokens = options_.kv_block_tokens;
  g.kv_cache_bytes = options_.kv_cache_bytes;
  g.communicator_timeout = options_.communicator_timeout;
  g.step_timeout = options_.step_timeout;
  g.formation_timeout = options_.formation_timeout;
  g.retry_delay = options_.retry_delay;
  g.max_retry_delay = std::max(options_.retry_delay, absl::Seconds(30));
  g.metrics = options_.metrics;
  for (int r = 0; r < options_.replicas; ++r) {
    groups_.push_back(std::make_unique<ReplicaGroup>(r, plan_, g, &assignment_ids_));
  }
  ticker_ = std::thread([this] { TickLoop(); });
}

Cluster::~Cluster() { Shutdown("coordinator stopped"); }

std::vector<StepExecutor*> Cluster::executors() {
  std::vector<StepExecutor*> out;
  for (auto& g : groups_) out.push_back(g.get());
  return out;
}

// ---------------------------------------------------------------------------- Attach

grpc::Status Cluster::Attach(grpc::ServerContext* context, AttachStream* stream) {
  {
    absl::MutexLock lock(&mu_);
    ++handlers_;
  }
  struct Leave {
    Cluster* c;
    ~Leave() {
      absl::MutexLock lock(&c->mu_);
      --c->handlers_;
    }
  } leave{this};

  v1::WorkerMessage first;
  if (!stream->Read(&first)) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the worker closed its Attach stream before sending Register");
  }
  if (!first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("the first message of an Attach stream must be Register, "
                                     "got ",
                                     MessageName(first)));
  }
  std::shared_ptr<AttachedWorker> worker;
  absl::Status refusal;
  {
    absl::MutexLock lock(&mu_);
    refusal = CheckRegister(first.register_());
    if (refusal.ok()) {
      worker = std::make_shared<AttachedWorker>(first.register_(), context, stream);
      workers_[worker->id()] = Entry{worker, -1, -1, ++registrations_};
      FillVacancies();
    }
  }
  if (!refusal.ok()) {
    v1::CoordinatorMessage msg;
    msg.mutable_refused()->set_code(static_cast<int32_t>(refusal.code()));
    msg.mutable_refused()->set_message(std::string(refusal.message()));
    stream->Write(msg);
    return ToGrpc(refusal);
  }

  v1::WorkerMessage msg;
  while (stream->Read(&msg)) Dispatch(worker, msg);
  Gone(worker);
  worker->Close();
  return grpc::Status::OK;
}

absl::Status Cluster::CheckRegister(const v1::Register& reg) const {
  if (shutdown_) return absl::UnavailableError("the coordinator is shutting down");
  if (reg.worker_id().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Register.worker_id is empty (worker at address '", reg.address(), "')"));
  }
  if (reg.version() != options_.version) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", reg.worker_id(), " runs tessera version '", reg.version(),
                     "' but the coordinator runs '", options_.version,
                     "': start workers of the same version"));
  }
  auto it = workers_.find(reg.worker_id());
  if (it != workers_.end()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a worker with id '", reg.worker_id(), "' is already attached (",
        it->second.worker->registration().address(), "): give each worker a unique --name"));
  }
  return absl::OkStatus();
}

void Cluster::FillVacancies() {
  if (shutdown_) return;
  std::vector<Entry*> spares;
  for (auto& [id, e] : workers_) {
    if (e.replica < 0) spares.push_back(&e);
  }
  std::sort(spares.begin(), spares.end(),
            [](const Entry* a, const Entry* b) { return a->order < b->order; });
  size_t next = 0;
  for (auto& g : groups_) {
    for (int rank = g->FirstVacantRank(); rank >= 0 && next < spares.size();
         rank = g->FirstVacantRank()) {
      Entry* e = spares[next++];
      e->replica = g->replica();
      e->rank = rank;
      g->Fill(rank, e->worker);
    }
  }
}

void Cluster::Dispatch(const std::shared_ptr<AttachedWorker>& worker,
                       const v1::WorkerMessage& msg) {
  int replica = -1, rank = -1;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker->id());
    if (it == workers_.end() || it->second.worker != worker) return;
    replica = it->second.replica;
    rank = it->second.rank;
  }
  // A spare has never been assigned anything: whatever it says is not about a group.
  if (replica < 0) return;
  ReplicaGroup* g = groups_[replica].get();
  switch (msg.msg_case()) {
    case v1::WorkerMessage::kPrepared:
      g->OnPrepared(rank, worker.get(), msg.prepared());
      break;
    case v1::WorkerMessage::kReady:
      g->OnReady(rank, worker.get(), msg.ready());
      break;
    case v1::WorkerMessage::kFailed:
      g->OnFailed(rank, worker.get(), msg.failed());
      break;
    case v1::WorkerMessage::kStepResult:
      g->OnStepResult(rank, worker.get(), msg.step_result());
      break;
    case v1::WorkerMessage::kRegister:  // a repeated Register changes nothing
    case v1::WorkerMessage::MSG_NOT_SET:
      break;
  }
}

void Cluster::Gone(const std::shared_ptr<AttachedWorker>& worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker->id());
  if (it == workers_.end() || it->second.worker != worker) return;
  const Entry e = it->second;
  workers_.erase(it);
  if (e.replica >= 0) groups_[e.replica]->WorkerGone(e.rank, worker.get());
  FillVacancies();
}

void Cluster::TickLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&shutdown_), absl::Milliseconds(100))) return;
    }
    const absl::Time now = absl::Now();
    for (auto& g : groups_) g->Tick(now);
  }
}

// ---------------------------------------------------------------------------- shutdown

void Cluster::Shutdown(const std::string& reason) {
  std::vector<std::shared_ptr<AttachedWorker>> all;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    for (auto& [id, e] : workers_) all.push_back(e.worker);
  }
  if (ticker_.joinable()) ticker_.join();
  for (auto& g : groups_) g->Shutdown(reason);
  v1::CoordinatorMessage msg;
  msg.mutable_shutdown()->set_reason(reason);
  auto shared = std::make_shared<const v1::CoordinatorMessage>(std::move(msg));
  for (auto& w : all) w->Send(shared);

  // Workers leave on Shutdown; give them a moment to close their streams themselves.
  const absl::Time grace = absl::Now() + absl::Seconds(2);
  for (auto& w : all) w->Flush(std::max(grace - absl::Now(), absl::ZeroDuration()));
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return handlers_ == 0; };
  {
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithDeadline(absl::Condition(&idle), grace)) return;
  }
  for (auto& w : all) w->Cancel();
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(3));
}

// ---------------------------------------------------------------------------- infos

int Cluster::ready_replicas() const {
  int n = 0;
  for (const auto& g : groups_) n += g->state().ready;
  return n;
}

std::vector<v1::ReplicaInfo> Cluster::ReplicaInfos() const {
  std::vector<v1::ReplicaInfo> out;
  for (const auto& g : groups_) out.push_back(g->Info());
  return out;
}

std::vector<v1::WorkerInfo> Cluster::WorkerInfos() const {
  std::vector<std::tuple<bool, int, int, uint64_t, v1::WorkerInfo>> rows;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, e] : workers_) {
      const v1::Register& reg = e.worker->registration();
      v1::WorkerInfo info;
      info.set_worker_id(reg.worker_id());
      info.set_address(reg.address());
      info.set_device(reg.device());
      info.set_replica(e.replica);
      info.set_rank(e.rank);
      info.set_tp_rank(e.rank < 0 ? -1 : static_cast<int32_t>(plan_.ranks[e.rank].tp_rank));
      info.set_pp_stage(e.rank < 0 ? -1 : static_cast<int32_t>(plan_.ranks[e.rank].pp_stage));
      info.set_memory_total_bytes(reg.memory_total_bytes());
      const v1::MemoryUsage m = e.worker->memory();
      info.set_weight_bytes(m.weight_bytes());
      info.set_kv_cache_bytes(m.kv_cache_bytes());
      info.set_workspace_bytes(m.workspace_bytes());
      rows.emplace_back(e.replica < 0, e.replica, e.rank, e.order, std::move(info));
    }
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a), std::get<2>(a), std::get<3>(a)) <
           std::tie(std::get<0>(b), std::get<1>(b), std::get<2>(b), std::get<3>(b));
  });
  std::vector<v1::WorkerInfo> out;
  for (auto& row : rows) out.push_back(std::move(std::get<4>(row)));
  return out;
}

void Cluster::FillModelInfo(v1::ModelInfo* info) const {
  info->set_tensor_parallel(static_cast<uint32_t>(plan_.tp));
  info->set_pipeline_parallel(static_cast<uint32_t>(plan_.pp));
  info->set_replicas(static_cast<uint32_t>(groups_.size()));
  info->set_kv_block_tokens(static_cast<uint32_t>(options_.kv_block_tokens));
  info->clear_replica_info();
  uint32_t ready = 0;
  for (const v1::ReplicaInfo& r : ReplicaInfos()) {
    ready += r.state() == "ready";
    *info->add_replica_info() = r;
  }
  info->set_ready_replicas(ready);
  info->clear_workers();
  for (v1::WorkerInfo& w : WorkerInfos()) *info->add_workers() = std::move(w);
}

}  // namespace tessera
