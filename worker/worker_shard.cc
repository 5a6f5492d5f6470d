#include "worker/worker_shard.h"

#include <chrono>
#include <limits>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant/types.h"
#include "kernels/status_macros.h"
#include "worker/backend_factory.h"
#include "worker/tcp_communicator.h"

namespace tessera {
namespace {

// Activation rows the workspace estimate of Ready assumes: the coordinator's
// default limit of tokens per step (the engine grows its buffers to the largest
// step it sees).
constexpr int64_t kWorkspaceTokens = 512;

// A Communicator group's default per-operation timeout when Connect sets none.
constexpr absl::Duration kDefaultCommunicatorTimeout = absl::Seconds(30);

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string HostPortString(const std::string &host, int port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

ModelShard ShardFromProto(const v1::Shard &s) {
  ModelShard m;
  m.layer_begin = s.layer_begin();
  m.layer_end = s.layer_end();
  m.kv_head_begin = s.kv_head_begin();
  m.kv_head_end = s.kv_head_end();
  m.ff_begin = s.ff_begin();
  m.ff_end = s.ff_end();
  m.vocab_begin = s.vocab_begin();
  m.vocab_end = s.vocab_end();
  return m;
}

// Bytes of one tensor as stored (whole quant blocks per row); 0 if it cannot be
// read.
int64_t MatrixBytes(const WeightSource &w, const char *name) {
  absl::StatusOr<QuantMatrix> m = w.Matrix(name);
  if (!m.ok()) return 0;
  const QuantTraits *t = FindQuantTraits(m->type);
  if (t == nullptr || t->block_elems == 0) return 0;
  return m->rows * (m->cols / t->block_elems) * t->block_bytes;
}

// The assignment's own consistency and its fit to the model; errors name the
// field.
absl::Status CheckAssignment(const v1::Assignment &a, const ModelConfig &c, const ModelShard &shard,
                             const std::string &device) {
  auto bad = [&](const std::string &what) {
    return absl::InvalidArgumentError(absl::StrCat("assignment ", a.assignment_id(), ": ", what));
  };
  if (a.tp() < 1 || a.pp() < 1) return bad(absl::StrCat("tp ", a.tp(), " x pp ", a.pp()));
  if (a.tp_rank() >= a.tp()) return bad(absl::StrCat("tp_rank ", a.tp_rank(), " >= tp ", a.tp()));
  if (a.pp_stage() >= a.pp()) {
    return bad(absl::StrCat("pp_stage ", a.pp_stage(), " >= pp ", a.pp()));
  }
  if (a.rank() != a.pp_stage() * a.tp() + a.tp_rank()) {
    return bad(absl::StrCat("rank ", a.rank(), " is not pp_stage * tp + tp_rank = ",
                            a.pp_stage() * a.tp() + a.tp_rank()));
  }
  if (absl::Status s = shard.Validate(c); !s.ok()) {
    return bad(absl::StrCat(s.message(), " (model ", c.name, ": ", c.n_layers, " layers, ",
                            c.n_kv_heads, " KV heads, n_ff ", c.n_ff, ", ", c.n_vocab, " tokens)"));
  }
  if (shard.first_stage() != (a.pp_stage() == 0) ||
      shard.last_stage(c) != (a.pp_stage() + 1 == a.pp())) {
    return bad(absl::StrCat("layers [", shard.layer_begin, ", ", shard.layer_end,
                            ") do not fit pipeline stage ", a.pp_stage(), " of ", a.pp(),
                            " (the first stage starts at layer 0, the last ends at layer ",
                            c.n_layers, ")"));
  }
  if (a.vocab_widths_size() != static_cast<int>(a.tp())) {
    return bad(absl::StrCat(a.vocab_widths_size(), " vocab_widths for tp ", a.tp()));
  }
  uint64_t total = 0;
  for (uint64_t w : a.vocab_widths()) total += w;
  if (total != static_cast<uint64_t>(c.n_vocab) ||
      a.vocab_widths(static_cast<int>(a.tp_rank())) !=
          static_cast<uint64_t>(shard.vocab_end - shard.vocab_begin)) {
    return bad(absl::StrCat("vocab_widths sum to ", total, " (n_vocab ", c.n_vocab,
                            ") or give tp_rank ", a.tp_rank(), " a width other than its shard's ",
                            shard.vocab_end - shard.vocab_begin));
  }
  if (a.sampler() && (a.pp_stage() + 1 != a.pp() || a.tp_rank() != 0)) {
    return bad(absl::StrCat("sampler is set on tp_rank ", a.tp_rank(), " of stage ", a.pp_stage(),
                            "; only tp_rank 0 of the last stage samples"));
  }
  if (a.kv_block_tokens() < 1) return bad("kv_block_tokens is 0");
  if (a.kv_cache_bytes() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return bad(absl::StrCat("kv_cache_bytes ", a.kv_cache_bytes(), " is too large"));
  }
  if (device != "cpu" && a.tp() * a.pp() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("assignment ", a.assignment_id(), ": a group of ", a.tp(), " x ", a.pp(),
                     " ranks on device '", device,
                     "' needs device-memory communicators (NCCL), which the "
                     "worker protocol cannot set up "
                     "yet; run multi-rank groups with --device cpu, or TP = PP "
                     "= 1 on a GPU"));
  }
  return absl::OkStatus();
}

}  // namespace

// Forwards every operation and adds its wall time to a running total (read per
// step) and to the worker's metrics. Cheap: two clock reads per collective.
class AssignedShard::TimedCommunicator final : public Communicator {
 public:
  TimedCommunicator(Communicator *inner, WorkerMetrics *metrics)
      : inner_(inner), metrics_(metrics) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void set_timeout(absl::Duration d) override { inner_->set_timeout(d); }
  absl::Duration timeout() const override { return inner_->timeout(); }
  absl::Status AllReduceSum(float *data, int64_t n) override {
    return Timed("all_reduce", [&] { return inner_->AllReduceSum(data, n); });
  }
  absl::Status AllGather(const float *local, int64_t n_local, float *out) override {
    return Timed("all_gather", [&] { return inner_->AllGather(local, n_local, out); });
  }
  absl::Status AllGatherV(const float *local, absl::Span<const int64_t> counts,
                          float *out) override {
    return Timed("all_gather", [&] { return inner_->AllGatherV(local, counts, out); });
  }
  absl::Status Send(int peer, const float *data, int64_t n) override {
    return Timed("send", [&] { return inner_->Send(peer, data, n); });
  }
  absl::Status Recv(int peer, float *data, int64_t n) override {
    return Timed("recv", [&] { return inner_->Recv(peer, data, n); });
  }
  absl::Status Barrier() override {
    return Timed(nullptr, [&] { return inner_->Barrier(); });
  }
  // Seconds spent in operations since the last call.
  double TakeSeconds() { return std::exchange(seconds_, 0.0); }

 private:
  template <typename F>
  absl::Status Timed(const char *op, F &&f) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = f();
    const double dt = SecondsSince(start);
    seconds_ += dt;
    if (metrics_ != nullptr && op != nullptr) metrics_->Collective(op, dt);
    return s;
  }
  Communicator *inner_;
  WorkerMetrics *metrics_;
  double seconds_ = 0;
};

AssignedShard::AssignedShard(v1::Assignment a, const WeightSource *model, ShardContext context,
                             ModelShard shard, EngineOptions engine_options, int64_t kv_capacity)
    : a_(std::move(a)),
      model_(model),
      ctx_(std::move(context)),
      shard_(shard),
      engine_options_(engine_options),
      kv_capacity_(kv_capacity) {
  name_ = absl::StrCat("worker ", ctx_.worker_id, " (replica ", a_.replica(), ", rank ", a_.rank(),
                       ")");
}

AssignedShard::~AssignedShard() {
  runner_.reset();
  engine_.reset();
  hooks_.reset();
  backend_.reset();
  timed_tensor_.reset();
  timed_pipeline_.reset();
  tensor_group_.reset();
  pipeline_.reset();
}

absl::StatusOr<std::unique_ptr<AssignedShard>> AssignedShard::Prepare(const v1::Assignment &a,
                                                                      const WeightSource *model,
                                                                      const ShardContext &context) {
  const ModelConfig &c = model->config();
  const ModelShard shard = ShardFromProto(a.shard());
  TESSERA_RETURN_IF_ERROR(CheckAssignment(a, c, shard, context.device));

  EngineOptions eo;
  eo.kv_block_tokens = static_cast<int>(a.kv_block_tokens());
  eo.kv_budget_bytes = a.kv_cache_bytes() > 0 ? static_cast<int64_t>(a.kv_cache_bytes())
                                              : context.default_kv_cache_bytes;
  eo.kv_type = PreferredKvType(context.device);  // what Connect's backend will take
  absl::StatusOr<int64_t> capacity = Engine::KvBlockCapacity(c, shard, eo);
  if (!capacity.ok()) {
    return absl::Status(capacity.status().code(), absl::StrCat("assignment ", a.assignment_id(),
                                                               ": ", capacity.status().message()));
  }
  auto out =
      std::unique_ptr<AssignedShard>(new AssignedShard(a, model, context, shard, eo, *capacity));

  // Port 0: the kernel picks free ports, which Prepared publishes.
  for (auto [listener, address, what] :
       {std::tuple{&out->tensor_listener_, &out->tensor_address_, "tensor-group"},
        std::tuple{&out->pipeline_listener_, &out->pipeline_address_, "pipeline"}}) {
    absl::StatusOr<std::unique_ptr<TcpListener>> l =
        TcpListener::Listen(HostPortString(context.bind_host, 0));
    if (!l.ok()) {
      return absl::Status(l.status().code(),
                          absl::StrCat(out->name_, ": cannot open its ", what, " listener on ",
                                       context.bind_host, ": ", l.status().message()));
    }
    *address = HostPortString(context.advertise_host, (*l)->port());
    *listener = *std::move(l);
  }
  return out;
}

v1::Prepared AssignedShard::prepared() const {
  v1::Prepared p;
  p.set_assignment_id(a_.assignment_id());
  p.set_tensor_address(tensor_address_);
  p.set_pipeline_address(pipeline_address_);
  p.set_kv_blocks_capacity(static_cast<uint64_t>(kv_capacity_));
  return p;
}

absl::StatusOr<v1::Ready> AssignedShard::Connect(const v1::Connect &connect) {
  const auto start = std::chrono::steady_clock::now();
  const int tp = static_cast<int>(a_.tp()), pp = static_cast<int>(a_.pp());
  auto bad = [&](const std::string &what) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": Connect ", what));
  };
  if (runner_ != nullptr || (tensor_listener_ == nullptr && tp > 1)) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, ": a second Connect for assignment ", a_.assignment_id()));
  }
  if (connect.tensor_addresses_size() != tp) {
    return bad(
        absl::StrCat("has ", connect.tensor_addresses_size(), " tensor_addresses for tp ", tp));
  }
  if (connect.pipeline_addresses_size() != pp) {
    return bad(
        absl::StrCat("has ", connect.pipeline_addresses_size(), " pipeline_addresses for pp ", pp));
  }
  if (connect.kv_blocks() < 1 || connect.kv_blocks() > static_cast<uint64_t>(kv_capacity_)) {
    return bad(absl::StrCat("asks for ", connect.kv_blocks(),
                            " KV blocks; this worker's budget holds 1 to ", kv_capacity_));
  }
  const absl::Duration timeout = connect.timeout_ms() > 0 ? absl::Milliseconds(connect.timeout_ms())
                                                          : kDefaultCommunicatorTimeout;

  // Both meshes at once: rank r of one group may be waiting on a peer that is
  // itself still forming its other group, so forming them one after the other
  // could deadlock.
  auto form = [&](int size, int rank, const std::string &group_id,
                  const google::protobuf::RepeatedPtrField<std::string> &addresses,
                  std::unique_ptr<TcpListener> *listener,
                  std::unique_ptr<Communicator> *out) -> absl::Status {
    if (size == 1) {
      listener->reset();
      return absl::OkStatus();
    }
    TcpGroupOptions o;
    o.group_id = group_id;
    o.rank = rank;
    o.addresses.assign(addresses.begin(), addresses.end());
    o.connect_timeout = timeout;
    o.timeout = timeout;
    absl::StatusOr<std::unique_ptr<TcpCommunicator>> c =
        TcpCommunicator::Create(o, std::move(*listener));
    if (!c.ok()) return c.status();
    *out = *std::move(c);
    return absl::OkStatus();
  };
  absl::Status tensor_status;
  std::thread tensor_thread([&] {
    tensor_status = form(tp, static_cast<int>(a_.tp_rank()), connect.tensor_group_id(),
                         connect.tensor_addresses(), &tensor_listener_, &tensor_group_);
  });
  absl::Status pipeline_status =
      form(pp, static_cast<int>(a_.pp_stage()), connect.pipeline_group_id(),
           connect.pipeline_addresses(), &pipeline_listener_, &pipeline_);
  tensor_thread.join();
  if (!tensor_status.ok() || !pipeline_status.ok()) {
    std::string message = absl::StrCat(name_, ": forming its communicators failed:");
    if (!tensor_status.ok()) absl::StrAppend(&message, " tensor group: ", tensor_status.message());
    if (!pipeline_status.ok()) absl::StrAppend(&message, " pipeline: ", pipeline_status.message());
    tensor_group_.reset();
    pipeline_.reset();
    return absl::Status(tensor_status.ok() ? pipeline_status.code() : tensor_status.code(),
                        message);
  }

  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(ctx_.device, ctx_.threads);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(),
                        absl::StrCat(name_, ": ", backend.status().message()));
  }
  backend_ = *std::move(backend);
  ShardHooks *hooks = nullptr;  // a group of one: the engine's own no-op hooks
  if (tp > 1 || pp > 1) {
    CommunicatorHooksOptions ho;
    if (tensor_group_ != nullptr) {
      timed_tensor_ = std::make_unique<TimedCommunicator>(tensor_group_.get(), ctx_.metrics);
      ho.tensor_group = timed_tensor_.get();
      for (uint64_t w : a_.vocab_widths()) ho.vocab_widths.push_back(static_cast<int64_t>(w));
    }
    if (pipeline_ != nullptr) {
      timed_pipeline_ = std::make_unique<TimedCommunicator>(pipeline_.get(), ctx_.metrics);
      ho.pipeline = timed_pipeline_.get();
      ho.previous_stage = static_cast<int>(a_.pp_stage()) - 1;
      ho.next_stage = a_.pp_stage() + 1 < a_.pp() ? static_cast<int>(a_.pp_stage()) + 1 : -1;
    }
    hooks_ = std::make_unique<CommunicatorHooks>(std::move(ho));
    hooks = hooks_.get();
  }
  engine_options_.kv_blocks = static_cast<int64_t>(connect.kv_blocks());
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(*model_, shard_, backend_.get(), hooks, engine_options_);
  if (!engine.ok()) {
    return absl::Status(engine.status().code(),
                        absl::StrCat(name_, ": loading its shard of ", model_->description(),
                                     " failed: ", engine.status().message()));
  }
  engine_ = *std::move(engine);
  runner_ = std::make_unique<StepRunner>(engine_.get(), a_.sampler(), name_);

  // Memory: the weights it streams plus the embedding table it looks rows up
  // in; the KV cache of exactly kv_blocks blocks; activation buffers estimated
  // for kWorkspaceTokens tokens.
  const ModelConfig &c = model_->config();
  const int64_t weight_bytes =
      engine_->model().weight_bytes() +
      (shard_.first_stage() ? MatrixBytes(*model_, "token_embd.weight") : 0);
  KvLayout kv;
  kv.n_layers = static_cast<int>(shard_.layer_end - shard_.layer_begin);
  kv.n_kv_heads = static_cast<int>(shard_.kv_head_end - shard_.kv_head_begin);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_tokens = engine_options_.kv_block_tokens;
  kv.n_blocks = engine_options_.kv_blocks;
  kv.type = engine_->model().kv_type();
  const int64_t kv_heads = shard_.kv_head_end - shard_.kv_head_begin;
  const int64_t floats_per_token =
      3 * c.n_embd + 2 * kv_heads * c.n_gqa() * c.head_dim + 2 * kv_heads * c.head_dim +
      2 * (shard_.ff_end - shard_.ff_begin) + (shard_.vocab_end - shard_.vocab_begin) + c.n_vocab;
  const int64_t workspace_bytes = kWorkspaceTokens * floats_per_token * 4;

  v1::Ready ready;
  ready.set_assignment_id(a_.assignment_id());
  v1::MemoryUsage *m = ready.mutable_memory();
  m->set_weight_bytes(static_cast<uint64_t>(weight_bytes));
  m->set_kv_cache_bytes(static_cast<uint64_t>(kv.bytes()));
  m->set_workspace_bytes(static_cast<uint64_t>(workspace_bytes));
  m->set_total_bytes(static_cast<uint64_t>(weight_bytes + kv.bytes() + workspace_bytes));
  ready.set_load_seconds(SecondsSince(start));
  ready.set_bytes_loaded(static_cast<uint64_t>(weight_bytes));
  if (ctx_.metrics != nullptr) {
    ctx_.metrics->ModelLoaded(ready.load_seconds(), weight_bytes);
    ctx_.metrics->SetMemory(static_cast<int64_t>(m->total_bytes()), weight_bytes, kv.bytes(),
                            workspace_bytes);
  }
  return ready;
}

absl::StatusOr<v1::StepResult> AssignedShard::Step(const v1::Step &step) {
  if (runner_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, ": step ", step.step_id(), " before its group was connected"));
  }
  if (timed_tensor_) timed_tensor_->TakeSeconds();
  if (timed_pipeline_) timed_pipeline_->TakeSeconds();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<v1::StepResult> result = runner_->Run(step);
  const double seconds = SecondsSince(start);
  if (!result.ok()) return result.status();
  double collective = 0;
  if (timed_tensor_) collective += timed_tensor_->TakeSeconds();
  if (timed_pipeline_) collective += timed_pipeline_->TakeSeconds();
  result->set_compute_seconds(seconds);
  result->set_collective_seconds(collective);
  if (ctx_.metrics != nullptr) ctx_.metrics->StepComputed(seconds);
  return result;
}

}  // namespace tessera
