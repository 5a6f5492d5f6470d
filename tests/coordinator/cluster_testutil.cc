#include "tests/coordinator/cluster_testutil.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "tessera/v1/worker.grpc.pb.h"
#include "worker/shard_hooks.h"
#include "worker/step_runner.h"
#include "worker/tcp_communicator.h"

namespace tessera::testing_util {

// One assignment's state: listeners after Assignment, the engine after Connect.
struct FakeWorker::Rank {
  v1::Assignment assignment;
  ModelShard shard;
  std::unique_ptr<TcpListener> tensor_listener, pipeline_listener;
  std::unique_ptr<TcpCommunicator> tensor_group, pipeline;
  std::unique_ptr<CommunicatorHooks> hooks;
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<StepRunner> runner;
};

FakeWorker::FakeWorker(FakeWorkerOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Run(); });
}

FakeWorker::~FakeWorker() {
  Kill();
  if (thread_.joinable()) thread_.join();
}

void FakeWorker::Kill() { context_.TryCancel(); }

bool FakeWorker::WaitFinished(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&finished_), timeout);
}

std::vector<v1::Assignment> FakeWorker::assignments() const {
  absl::MutexLock lock(&mu_);
  return assignments_;
}
int FakeWorker::resets() const {
  absl::MutexLock lock(&mu_);
  return resets_;
}
bool FakeWorker::got_shutdown() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}
std::optional<v1::Failed> FakeWorker::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}
grpc::Status FakeWorker::final_status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

namespace {

v1::WorkerMessage FailedMessage(uint64_t assignment_id, const absl::Status& s) {
  v1::WorkerMessage m;
  m.mutable_failed()->set_assignment_id(assignment_id);
  m.mutable_failed()->set_code(static_cast<int32_t>(s.code()));
  m.mutable_failed()->set_message(std::string(s.message()));
  return m;
}

ModelShard ShardFromProto(const v1::Shard& s) {
  ModelShard m;
  m.layer_begin = s.layer_begin(), m.layer_end = s.layer_end();
  m.kv_head_begin = s.kv_head_begin(), m.kv_head_end = s.kv_head_end();
  m.ff_begin = s.ff_begin(), m.ff_end = s.ff_end();
  m.vocab_begin = s.vocab_begin(), m.vocab_end = s.vocab_end();
  return m;
}

absl::StatusOr<std::unique_ptr<TcpCommunicator>> Join(const std::string& group_id, int rank,
                                                      const google::protobuf::RepeatedPtrField<
                                                          std::string>& addresses,
                                                      absl::Duration timeout,
                                                      std::unique_ptr<TcpListener> listener) {
  TcpGroupOptions o;
  o.group_id = group_id;
  o.rank = rank;
  o.addresses.assign(addresses.begin(), addresses.end());
  o.connect_timeout = timeout;
  o.timeout = timeout;
  return TcpCommunicator::Create(o, std::move(listener));
}

}  // namespace

void FakeWorker::Run() {
  auto channel = grpc::CreateChannel(options_.coordinator, grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  auto stream = stub->Attach(&context_);
  v1::WorkerMessage reg;
  reg.mutable_register_()->set_worker_id(options_.id);
  reg.mutable_register_()->set_address(absl::StrCat("fake/", options_.id));
  reg.mutable_register_()->set_device("cpu");
  reg.mutable_register_()->set_memory_total_bytes(uint64_t{1} << 30);
  reg.mutable_register_()->set_version(options_.version);
  stream->Write(reg);

  int assignments_to_fail = options_.fail_assignments;
  bool step_failed = false;
  std::unique_ptr<Rank> rank;
  const std::string name = absl::StrCat("fake worker ", options_.id);
  v1::CoordinatorMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_assignment()) {
      const v1::Assignment& a = msg.assignment();
      {
        absl::MutexLock lock(&mu_);
        assignments_.push_back(a);
      }
      rank.reset();
      if (assignments_to_fail > 0) {
        --assignments_to_fail;
        stream->Write(FailedMessage(
            a.assignment_id(), absl::NotFoundError(absl::StrCat(name, ": scripted failure: ",
                                                                "no model at ", a.model_path()))));
        continue;
      }
      rank = std::make_unique<Rank>();
      rank->assignment = a;
      rank->shard = ShardFromProto(a.shard());
      auto tl = TcpListener::Listen("127.0.0.1:0");
      auto pl = TcpListener::Listen("127.0.0.1:0");
      EngineOptions eo;
      eo.kv_budget_bytes = options_.kv_budget_bytes;
      eo.kv_block_tokens = static_cast<int>(a.kv_block_tokens());
      auto cap = Engine::KvBlockCapacity(options_.weights->config(), rank->shard, eo);
      absl::Status s = !tl.ok() ? tl.status() : !pl.ok() ? pl.status() : cap.status();
      if (!s.ok()) {
        stream->Write(FailedMessage(a.assignment_id(), s));
        rank.reset();
        continue;
      }
      rank->tensor_listener = *std::move(tl);
      rank->pipeline_listener = *std::move(pl);
      v1::WorkerMessage out;
      v1::Prepared* p = out.mutable_prepared();
      p->set_assignment_id(a.assignment_id());
      p->set_tensor_address(rank->tensor_listener->address());
      p->set_pipeline_address(rank->pipeline_listener->address());
      p->set_kv_blocks_capacity(static_cast<uint64_t>(*cap));
      stream->Write(out);
    } else if (msg.has_connect()) {
      const v1::Connect& c = msg.connect();
      if (!rank || rank->assignment.assignment_id() != c.assignment_id()) {
        stream->Write(FailedMessage(c.assignment_id(),
                                    absl::FailedPreconditionError("Connect without Assignment")));
        continue;
      }
      const v1::Assignment& a = rank->assignment;
      const absl::Duration timeout = absl::Milliseconds(c.timeout_ms());
      absl::Status ts, ps;
      std::thread tensor_thread([&] {
        if (a.tp() <= 1) return;
        auto g = Join(c.tensor_group_id(), static_cast<int>(a.tp_rank()), c.tensor_addresses(),
                      timeout, std::move(rank->tensor_listener));
        if (g.ok()) rank->tensor_group = *std::move(g);
        ts = g.status();
      });
      if (a.pp() > 1) {
        auto g = Join(c.pipeline_group_id(), static_cast<int>(a.pp_stage()),
                      c.pipeline_addresses(), timeout, std::move(rank->pipeline_listener));
        if (g.ok()) rank->pipeline = *std::move(g);
        ps = g.status();
      }
      tensor_thread.join();
      absl::Status s = ts.ok() ? ps : ts;
      if (s.ok()) {
        CommunicatorHooksOptions ho;
        ho.tensor_group = rank->tensor_group.get();
        if (a.tp() > 1) {
          ho.vocab_widths.assign(a.vocab_widths().begin(), a.vocab_widths().end());
        }
        ho.pipeline = rank->pipeline.get();
        ho.previous_stage = a.pp() > 1 ? static_cast<int>(a.pp_stage()) - 1 : -1;
        ho.next_stage = a.pp_stage() + 1 < a.pp() ? static_cast<int>(a.pp_stage()) + 1 : -1;
        rank->hooks = std::make_unique<CommunicatorHooks>(ho);
        rank->backend = std::make_unique<CpuBackend>(1);
        EngineOptions eo;
        eo.kv_block_tokens = static_cast<int>(a.kv_block_tokens());
        eo.kv_blocks = static_cast<int64_t>(c.kv_blocks());
        auto engine = Engine::Create(*options_.weights, rank->shard, rank->backend.get(),
                                     rank->hooks.get(), eo);
        if (engine.ok()) {
          rank->engine = *std::move(engine);
          rank->runner = std::make_unique<StepRunner>(
              rank->engine.get(), a.sampler(),
              absl::StrCat(name, " (replica ", a.replica(), ", rank ", a.rank(), ")"));
        }
        s = engine.status();
      }
      if (!s.ok()) {
        stream->Write(FailedMessage(c.assignment_id(), s));
        rank.reset();
        continue;
      }
      v1::WorkerMessage out;
      out.mutable_ready()->set_assignment_id(c.assignment_id());
      out.mutable_ready()->mutable_memory()->set_total_bytes(uint64_t{1} << 30);
      out.mutable_ready()->mutable_memory()->set_weight_bytes(1000 + a.rank());
      out.mutable_ready()->mutable_memory()->set_kv_cache_bytes(c.kv_blocks());
      stream->Write(out);
    } else if (msg.has_step()) {
      const v1::Step& step = msg.step();
      if (step.step_id() == options_.die_at_step) {
        context_.TryCancel();
        break;
      }
      if (step.step_id() == options_.silent_at_step) continue;
      v1::WorkerMessage out;
      v1::StepResult* r = out.mutable_step_result();
      if (!rank || !rank->runner) {
        r->set_step_id(step.step_id());
        r->set_code(static_cast<int32_t>(absl::StatusCode::kFailedPrecondition));
        r->set_message(absl::StrCat(name, ": a Step before Connect"));
      } else if (step.step_id() == options_.fail_step && !step_failed) {
        step_failed = true;
        r->set_step_id(step.step_id());
        r->set_code(static_cast<int32_t>(absl::StatusCode::kInternal));
        r->set_message(absl::StrCat(name, ": scripted step failure"));
      } else {
        absl::StatusOr<v1::StepResult> result = rank->runner->Run(step);
        if (result.ok()) {
          *r = *std::move(result);
        } else {
          r->set_step_id(step.step_id());
          r->set_code(static_cast<int32_t>(result.status().code()));
          r->set_message(std::string(result.status().message()));
        }
      }
      stream->Write(out);
    } else if (msg.has_reset()) {
      rank.reset();
      absl::MutexLock lock(&mu_);
      ++resets_;
    } else if (msg.has_shutdown()) {
      {
        absl::MutexLock lock(&mu_);
        shutdown_ = true;
      }
      stream->WritesDone();
      break;
    } else if (msg.has_refused()) {
      absl::MutexLock lock(&mu_);
      refused_ = msg.refused();
    }
  }
  rank.reset();  // a crashed worker's sockets close with it
  grpc::Status status = stream->Finish();
  absl::MutexLock lock(&mu_);
  status_ = status;
  finished_ = true;
}

}  // namespace tessera::testing_util
