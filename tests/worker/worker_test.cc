// Worker: the worker process's runtime against a fake coordinator written here
// (a tessera.v1.Coordinator service on a real gRPC server on loopback, scripted
// step by step by the test). In-process Workers, each on its own thread, open a
// real GGUF file of the tiny synthetic llama, go through Register -> Assignment
// -> Prepared -> Connect -> Ready -> Steps as 1 worker, 2 (TP = 2) and 2 (PP =
// 2), and must produce the greedy tokens of one unsharded engine on the same
// file. Also: the KV capacity and memory they report (recomputed here from the
// KV layout), errors that keep the stream up, Reset and re-assignment, refusal,
// a coordinator that starts late, one that disappears (Run returns UNAVAILABLE
// after the reconnect timeout) or comes back (the worker re-registers), and
// Stop().
#include "worker/worker.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/server_context.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "worker/backend_factory.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "tessera/v1/worker.grpc.pb.h"
#include "tests/worker/tiny_model_testutil.h"
#include "worker/grpc_server.h"
#include "worker/tcp_socket.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using AttachStream = grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>;

const absl::Duration kWait = absl::Seconds(20);  // a bound on waiting, never an expectation
constexpr int kBlockTokens = 4;
constexpr int64_t kWorkerKvBytes = 1 << 20;

// -------------------------------------------------------------------------
// fake coordinator

// One attached worker: its Register, the messages it sent since, and a way to
// write to it.
class Conn {
 public:
  Conn(v1::Register reg, AttachStream *stream) : reg_(std::move(reg)), stream_(stream) {}
  const v1::Register &reg() const { return reg_; }

  bool Send(const v1::CoordinatorMessage &m) {
    absl::MutexLock lock(&write_mu_);
    return !ended_ && stream_->Write(m);
  }
  // The next message, or nullopt after `timeout` or once the stream has ended.
  std::optional<v1::WorkerMessage> Next(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !inbox_.empty() || done_; };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (inbox_.empty()) return std::nullopt;
    v1::WorkerMessage m = std::move(inbox_.front());
    inbox_.pop_front();
    return m;
  }
  bool WaitEnded(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  }

  // The handler's side.
  void Serve() {
    v1::WorkerMessage m;
    while (stream_->Read(&m)) {
      absl::MutexLock lock(&mu_);
      inbox_.push_back(m);
    }
    {
      absl::MutexLock lock(&write_mu_);
      ended_ = true;  // the stream dies with the handler: no more writes
    }
    absl::MutexLock lock(&mu_);
    done_ = true;
  }

 private:
  const v1::Register reg_;
  AttachStream *const stream_;
  absl::Mutex write_mu_;
  bool ended_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Mutex mu_;
  std::deque<v1::WorkerMessage> inbox_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

class FakeCoordinator final : public v1::Coordinator::Service {
 public:
  // Serves on 127.0.0.1:`port` (0: any free port).
  explicit FakeCoordinator(int port = 0, std::string version = kWorkerProtocolVersion)
      : version_(std::move(version)) {
    auto s = StartGrpcServer(absl::StrCat("127.0.0.1:", port), {this});
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) server_ = *std::move(s);
  }
  ~FakeCoordinator() override { Stop(); }

  // Ends every stream at once and stops serving (the coordinator "disappears").
  void Stop() {
    if (server_.server) server_.server->Shutdown(std::chrono::system_clock::now());
    server_.server.reset();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", server_.port); }
  int port() const { return server_.port; }

  grpc::Status Attach(grpc::ServerContext *, AttachStream *stream) override {
    v1::WorkerMessage first;
    if (!stream->Read(&first) || !first.has_register_()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "Register first");
    }
    {
      absl::MutexLock lock(&mu_);
      registers_.push_back(first.register_());
    }
    if (first.register_().version() != version_) {
      v1::CoordinatorMessage refused;
      refused.mutable_refused()->set_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
      refused.mutable_refused()->set_message(
          absl::StrCat("version '", first.register_().version(), "' is not '", version_, "'"));
      stream->Write(refused);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "version");
    }
    auto conn = std::make_shared<Conn>(first.register_(), stream);
    {
      absl::MutexLock lock(&mu_);
      conns_.push_back(conn);
    }
    conn->Serve();
    return grpc::Status::OK;
  }

  // The first n attached workers (waiting for them); empty after the bound.
  std::vector<std::shared_ptr<Conn>> WaitConns(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return conns_.size() >= n; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&enough), kWait)) return {};
    return std::vector<std::shared_ptr<Conn>>(conns_.begin(), conns_.begin() + n);
  }
  std::vector<v1::Register> registers() const {
    absl::MutexLock lock(&mu_);
    return registers_;
  }
  size_t n_registers() const {
    absl::MutexLock lock(&mu_);
    return registers_.size();
  }

 private:
  const std::string version_;
  GrpcServer server_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Register> registers_ ABSL_GUARDED_BY(mu_);
};

// -------------------------------------------------------------------------
// workers on threads

class RunningWorker {
 public:
  explicit RunningWorker(WorkerOptions o) {
    auto w = Worker::Create(std::move(o));
    EXPECT_TRUE(w.ok()) << w.status();
    if (!w.ok()) return;
    worker_ = *std::move(w);
    thread_ = std::thread([this] {
      status_ = worker_->Run();
      done_.Notify();
    });
  }
  ~RunningWorker() {
    if (worker_ == nullptr) return;
    worker_->Stop();
    thread_.join();
  }
  Worker *worker() { return worker_.get(); }
  // Run()'s status, or nullopt if it has not returned within `timeout`.
  std::optional<absl::Status> Wait(absl::Duration timeout = kWait) {
    if (worker_ == nullptr || !done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
    return status_;
  }

 private:
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
  absl::Notification done_;
  absl::Status status_;
};

WorkerOptions Options(const std::string &coordinator, const std::string &id) {
  WorkerOptions o;
  o.coordinator = coordinator;
  o.listen = "127.0.0.1:0";
  o.id = id;
  o.threads = 1;
  o.kv_cache_bytes = kWorkerKvBytes;
  o.connect_timeout = absl::Seconds(20);
  o.reconnect_timeout = absl::Seconds(1);
  return o;
}

// ------------------------------------------------------------------------- the
// protocol

const ModelConfig &Config() { return testing_util::TinyWeights().config(); }

// Rank r's shard of a TP x PP layout of the tiny llama, cut here by hand:
// layers by stage, KV heads, FFN rows (32-aligned for Q8_0) and vocab halves by
// tensor rank.
v1::Shard ShardOf(int tp, int pp, int tp_rank, int stage) {
  const ModelConfig &c = Config();
  v1::Shard s;
  s.set_layer_begin(static_cast<uint32_t>(stage * c.n_layers / pp));
  s.set_layer_end(static_cast<uint32_t>((stage + 1) * c.n_layers / pp));
  s.set_kv_head_begin(static_cast<uint32_t>(tp_rank * c.n_kv_heads / tp));
  s.set_kv_head_end(static_cast<uint32_t>((tp_rank + 1) * c.n_kv_heads / tp));
  s.set_ff_begin(static_cast<uint32_t>(tp_rank * c.n_ff / tp));
  s.set_ff_end(static_cast<uint32_t>((tp_rank + 1) * c.n_ff / tp));
  s.set_vocab_begin(static_cast<uint32_t>(tp_rank * c.n_vocab / tp));
  s.set_vocab_end(static_cast<uint32_t>((tp_rank + 1) * c.n_vocab / tp));
  return s;
}

std::string FileIdentity(const std::string &path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(static_cast<int64_t>(st.st_size), ":", static_cast<int64_t>(st.st_mtime));
}

// KV cache bytes of one block of a shard: K and V, layers x block tokens x
// heads x head_dim floats (the paged layout, written out here independently of
// KvLayout).
int64_t KvBlockBytes(const v1::Shard &s) {
  return 2 * int64_t{s.layer_end() - s.layer_begin()} * kBlockTokens *
         (s.kv_head_end() - s.kv_head_begin()) * Config().head_dim *
         KvTypeBytes(PreferredKvType("cpu"));
}

uint64_t next_assignment_id = 100;

struct Group {
  int tp = 1, pp = 1;
  std::vector<std::shared_ptr<Conn>> ranks;  // by rank = stage * tp + tp_rank
  std::vector<v1::Assignment> assignments;
  int64_t kv_blocks = 0;
  uint64_t step_id = 0;
  int sampler() const { return (pp - 1) * tp; }
};

v1::Assignment MakeAssignment(const Group &g, int rank) {
  v1::Assignment a;
  a.set_assignment_id(++next_assignment_id);
  a.set_model_path(testing_util::TinyGgufPath());
  a.set_model_sha(FileIdentity(testing_util::TinyGgufPath()));
  a.set_rank(static_cast<uint32_t>(rank));
  a.set_tp(static_cast<uint32_t>(g.tp));
  a.set_pp(static_cast<uint32_t>(g.pp));
  a.set_tp_rank(static_cast<uint32_t>(rank % g.tp));
  a.set_pp_stage(static_cast<uint32_t>(rank / g.tp));
  *a.mutable_shard() = ShardOf(g.tp, g.pp, rank % g.tp, rank / g.tp);
  for (int t = 0; t < g.tp; ++t) {
    const v1::Shard s = ShardOf(g.tp, g.pp, t, rank / g.tp);
    a.add_vocab_widths(s.vocab_end() - s.vocab_begin());
  }
  a.set_kv_block_tokens(kBlockTokens);
  a.set_sampler(rank == g.sampler());
  return a;
}

// Assignment -> Prepared -> Connect -> Ready on every rank, checking the
// replies.
void Form(Group &g) {
  const int n = g.tp * g.pp;
  ASSERT_EQ(static_cast<int>(g.ranks.size()), n);
  g.assignments.clear();
  for (int r = 0; r < n; ++r) {
    g.assignments.push_back(MakeAssignment(g, r));
    v1::CoordinatorMessage m;
    *m.mutable_assignment() = g.assignments[r];
    ASSERT_TRUE(g.ranks[r]->Send(m));
  }
  std::vector<v1::Prepared> prepared(n);
  g.kv_blocks = -1;
  for (int r = 0; r < n; ++r) {
    auto m = g.ranks[r]->Next();
    ASSERT_TRUE(m.has_value()) << "rank " << r << ": no Prepared";
    ASSERT_TRUE(m->has_prepared()) << "rank " << r << ": " << m->DebugString();
    prepared[r] = m->prepared();
    EXPECT_EQ(prepared[r].assignment_id(), g.assignments[r].assignment_id());
    EXPECT_TRUE(absl::StartsWith(prepared[r].tensor_address(), "127.0.0.1:"));
    EXPECT_TRUE(absl::StartsWith(prepared[r].pipeline_address(), "127.0.0.1:"));
    EXPECT_EQ(static_cast<int64_t>(prepared[r].kv_blocks_capacity()),
              kWorkerKvBytes / KvBlockBytes(g.assignments[r].shard()))
        << "rank " << r;
    const int64_t cap = static_cast<int64_t>(prepared[r].kv_blocks_capacity());
    if (g.kv_blocks < 0 || cap < g.kv_blocks) g.kv_blocks = cap;
  }
  for (int r = 0; r < n; ++r) {
    const int tp_rank = r % g.tp, stage = r / g.tp;
    v1::CoordinatorMessage m;
    v1::Connect *c = m.mutable_connect();
    c->set_assignment_id(g.assignments[r].assignment_id());
    c->set_tensor_group_id(absl::StrCat("stage", stage, "/tp"));
    for (int t = 0; t < g.tp; ++t)
      c->add_tensor_addresses(prepared[stage * g.tp + t].tensor_address());
    c->set_pipeline_group_id(absl::StrCat("tp", tp_rank, "/pp"));
    for (int s = 0; s < g.pp; ++s) {
      c->add_pipeline_addresses(prepared[s * g.tp + tp_rank].pipeline_address());
    }
    c->set_kv_blocks(static_cast<uint64_t>(g.kv_blocks));
    c->set_timeout_ms(15000);
    ASSERT_TRUE(g.ranks[r]->Send(m));
  }
  for (int r = 0; r < n; ++r) {
    auto m = g.ranks[r]->Next();
    ASSERT_TRUE(m.has_value()) << "rank " << r << ": no Ready";
    ASSERT_TRUE(m->has_ready()) << "rank " << r << ": " << m->DebugString();
    const v1::Ready &ready = m->ready();
    EXPECT_EQ(ready.assignment_id(), g.assignments[r].assignment_id());
    EXPECT_EQ(static_cast<int64_t>(ready.memory().kv_cache_bytes()),
              g.kv_blocks * KvBlockBytes(g.assignments[r].shard()));
    EXPECT_GT(ready.memory().weight_bytes(), 0u);
    EXPECT_EQ(ready.bytes_loaded(), ready.memory().weight_bytes());
    EXPECT_EQ(ready.memory().total_bytes(), ready.memory().weight_bytes() +
                                                ready.memory().kv_cache_bytes() +
                                                ready.memory().workspace_bytes());
  }
}

// Sends one step to every rank; every rank must answer it. Returns the
// sampler's result, or the first error result.
v1::StepResult RunStep(Group &g, v1::Step step) {
  step.set_step_id(++g.step_id);
  v1::CoordinatorMessage m;
  *m.mutable_step() = step;
  for (auto &conn : g.ranks) EXPECT_TRUE(conn->Send(m));
  v1::StepResult out, error;
  for (size_t r = 0; r < g.ranks.size(); ++r) {
    auto reply = g.ranks[r]->Next();
    if (!reply.has_value() || !reply->has_step_result()) {
      ADD_FAILURE() << "rank " << r << ": no StepResult for step " << g.step_id;
      error.set_code(static_cast<int>(absl::StatusCode::kDeadlineExceeded));
      continue;
    }
    const v1::StepResult &res = reply->step_result();
    EXPECT_EQ(res.step_id(), g.step_id);
    if (res.code() != 0 && error.code() == 0) error = res;
    if (static_cast<int>(r) == g.sampler()) {
      out = res;
    } else if (res.code() == 0) {
      EXPECT_EQ(res.sampled_size(), 0) << "rank " << r << " is not the sampler";
    }
  }
  return error.code() != 0 ? error : out;
}

// Greedy generation of several sequences together through the group (prompts
// prefilled in one step with the decodes of the others); block tables from a
// mirror of the KV cache.
std::vector<std::vector<int32_t>> Generate(Group &g,
                                           const std::vector<std::vector<int32_t>> &prompts,
                                           int n_tokens, uint64_t first_seq = 1) {
  KvBlockManager mirror(g.kv_blocks, kBlockTokens);
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (int t = 0; t < n_tokens; ++t) {
    v1::Step step;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const uint64_t id = first_seq + i;
      v1::SeqInput *in = step.add_inputs();
      in->set_seq_id(id);
      in->set_sample(true);
      if (t == 0) {
        for (int32_t tok : prompts[i]) in->add_tokens(tok);
        in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
      } else {
        in->set_position(static_cast<uint32_t>(prompts[i].size() + t - 1));
        in->add_tokens(out[i].back());
      }
      EXPECT_TRUE(mirror.Reserve(id, in->position() + in->tokens_size()).ok());
      for (int32_t b : mirror.BlockTable(id)) in->add_block_table(b);
    }
    v1::StepResult r = RunStep(g, step);
    EXPECT_EQ(r.code(), 0) << r.message();
    if (r.code() != 0 || r.sampled_size() != static_cast<int>(prompts.size())) {
      ADD_FAILURE() << "step " << g.step_id << ": " << r.DebugString();
      return out;
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(r.sampled(static_cast<int>(i)).seq_id(), first_seq + i);
      out[i].push_back(r.sampled(static_cast<int>(i)).token().id());
    }
    EXPECT_GE(r.compute_seconds(), r.collective_seconds());
  }
  return out;
}

// One unsharded engine on the same file: the logits after each token of
// `tokens`.
std::vector<std::vector<float>> ReferenceLogits(const std::vector<int32_t> &tokens) {
  auto model = OpenGgufModel(testing_util::TinyGgufPath());
  EXPECT_TRUE(model.ok()) << model.status();
  CpuBackend backend(1);
  EngineOptions o;
  o.kv_block_tokens = kBlockTokens;
  o.kv_blocks = 64;
  auto engine = Engine::Create(*model->weights, ModelShard::Whole(model->weights->config()),
                               &backend, nullptr, o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  std::vector<std::vector<float>> rows;
  std::vector<float> logits;
  for (int32_t t : tokens) {
    EXPECT_TRUE((*engine)->Step({{1, {t}, true}}, &logits).ok());
    rows.push_back(logits);
  }
  return rows;
}

// `generated` continues `prompt` greedily on the unsharded engine: at every
// position its token is the argmax (exact == true), or within float32 summation
// noise of the maximum (a tensor- parallel all-reduce sums in another order
// than one engine does).
void ExpectGreedy(const std::vector<int32_t> &prompt, const std::vector<int32_t> &generated,
                  bool exact) {
  std::vector<int32_t> forced = prompt;
  forced.insert(forced.end(), generated.begin(), generated.end());
  const auto rows = ReferenceLogits(forced);
  for (size_t i = 0; i < generated.size(); ++i) {
    const std::vector<float> &row = rows[prompt.size() - 1 + i];
    const auto best = std::max_element(row.begin(), row.end());
    if (exact) {
      EXPECT_EQ(generated[i], best - row.begin()) << "token " << i;
    } else {
      EXPECT_LE(*best - row[generated[i]], 1e-4f * std::max(1.0f, std::abs(*best)))
          << "token " << i;
    }
  }
}

void Shutdown(Group &g) {
  v1::CoordinatorMessage m;
  m.mutable_shutdown()->set_reason("test over");
  for (auto &conn : g.ranks) conn->Send(m);
}

const std::vector<std::vector<int32_t>> kPrompts = {{3, 17, 42, 8, 91, 5}, {60, 2, 2, 9}};

// A TP x PP group of fresh workers through formation and greedy generation.
void RunGroup(int tp, int pp) {
  FakeCoordinator coordinator;
  std::vector<std::unique_ptr<RunningWorker>> workers;
  for (int i = 0; i < tp * pp; ++i) {
    workers.push_back(std::make_unique<RunningWorker>(
        Options(coordinator.address(), absl::StrCat("w", tp, pp, "-", i))));
  }
  Group g;
  g.tp = tp, g.pp = pp;
  g.ranks = coordinator.WaitConns(workers.size());
  ASSERT_EQ(g.ranks.size(), workers.size());
  Form(g);
  if (::testing::Test::HasFatalFailure()) return;
  const auto out = Generate(g, kPrompts, 10);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("TP=", tp, " PP=", pp, " prompt ", i));
    ASSERT_EQ(out[i].size(), 10u);
    // Layers split across stages compute exactly what one engine does; a TP
    // split does not.
    ExpectGreedy(kPrompts[i], out[i], /*exact=*/tp == 1);
  }
  Shutdown(g);
  for (auto &w : workers) {
    auto s = w->Wait();
    ASSERT_TRUE(s.has_value()) << "a worker did not stop on Shutdown";
    EXPECT_TRUE(s->ok()) << *s;
  }
}

TEST(Worker, OneWorkerGeneratesTheEnginesGreedyTokens) { RunGroup(1, 1); }
TEST(Worker, TwoTensorParallelWorkersGenerateTheEnginesGreedyTokens) { RunGroup(2, 1); }
TEST(Worker, TwoPipelineStagesGenerateTheEnginesGreedyTokens) { RunGroup(1, 2); }

TEST(Worker, RegistersWithItsIdAddressDeviceAndVersion) {
  FakeCoordinator coordinator;
  RunningWorker w(Options(coordinator.address(), "reg-1"));
  auto conns = coordinator.WaitConns(1);
  ASSERT_EQ(conns.size(), 1u);
  const v1::Register &reg = conns[0]->reg();
  EXPECT_EQ(reg.worker_id(), "reg-1");
  EXPECT_EQ(reg.version(), kWorkerProtocolVersion);
  EXPECT_EQ(reg.address(), w.worker()->address());
  EXPECT_TRUE(absl::StartsWith(reg.address(), "127.0.0.1:")) << reg.address();
  EXPECT_EQ(reg.device(), w.worker()->device_name());
  EXPECT_TRUE(absl::StartsWith(reg.device(), "cpu")) << reg.device();
  EXPECT_EQ(reg.threads(), 1u);
  EXPECT_GT(reg.memory_total_bytes(), 0u);
  EXPECT_LE(reg.memory_free_bytes(), reg.memory_total_bytes());
}

TEST(Worker, StepErrorsKeepTheStreamUpAndResetAllowsANewAssignment) {
  FakeCoordinator coordinator;
  RunningWorker w(Options(coordinator.address(), "errors-1"));
  Group g;
  g.ranks = coordinator.WaitConns(1);
  ASSERT_EQ(g.ranks.size(), 1u);
  Form(g);
  if (HasFatalFailure()) return;
  const auto first = Generate(g, {kPrompts[0]}, 4);

  // A position the worker does not hold: an error result, and the group is
  // dropped.
  v1::Step bad;
  v1::SeqInput *in = bad.add_inputs();
  in->set_seq_id(1);
  in->set_position(2);
  in->add_tokens(5);
  in->set_sample(true);
  v1::StepResult r = RunStep(g, bad);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.message(), HasSubstr("worker errors-1 (replica 0, rank 0)"));
  EXPECT_THAT(r.message(), HasSubstr("sequence 1 is at position 2"));
  r = RunStep(g, bad);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.message(), HasSubstr("holds no ready shard"));

  // Connect for an assignment it does not hold.
  v1::CoordinatorMessage stale;
  stale.mutable_connect()->set_assignment_id(7);
  ASSERT_TRUE(g.ranks[0]->Send(stale));
  auto failed = g.ranks[0]->Next();
  ASSERT_TRUE(failed.has_value() && failed->has_failed());
  EXPECT_EQ(failed->failed().assignment_id(), 7u);
  EXPECT_THAT(failed->failed().message(), HasSubstr("holds no assignment"));

  // Reset, then the group forms again on the same (still open) file and starts
  // afresh.
  v1::CoordinatorMessage reset;
  reset.mutable_reset()->set_reason("test");
  ASSERT_TRUE(g.ranks[0]->Send(reset));
  Form(g);
  if (HasFatalFailure()) return;
  EXPECT_EQ(Generate(g, {kPrompts[0]}, 4), first);
  Shutdown(g);
  auto s = w.Wait();
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->ok()) << *s;
}

TEST(Worker, BadAssignmentsAnswerFailedNamingTheProblem) {
  FakeCoordinator coordinator;
  RunningWorker w(Options(coordinator.address(), "bad-1"));
  Group g;
  g.ranks = coordinator.WaitConns(1);
  ASSERT_EQ(g.ranks.size(), 1u);
  auto expect_failed = [&](v1::Assignment a, absl::StatusCode code, const std::string &text) {
    v1::CoordinatorMessage m;
    *m.mutable_assignment() = a;
    ASSERT_TRUE(g.ranks[0]->Send(m));
    auto reply = g.ranks[0]->Next();
    ASSERT_TRUE(reply.has_value());
    ASSERT_TRUE(reply->has_failed()) << reply->DebugString();
    EXPECT_EQ(reply->failed().assignment_id(), a.assignment_id());
    EXPECT_EQ(reply->failed().code(), static_cast<int>(code)) << reply->failed().message();
    EXPECT_THAT(reply->failed().message(), HasSubstr(text));
  };
  v1::Assignment a = MakeAssignment(g, 0);
  a.mutable_shard()->set_layer_end(5);
  expect_failed(a, absl::StatusCode::kInvalidArgument, "shard layer range [0, 5)");
  a = MakeAssignment(g, 0);
  a.set_model_path("/nonexistent/model.gguf");
  a.clear_model_sha();
  expect_failed(a, absl::StatusCode::kNotFound, "/nonexistent/model.gguf");
  a = MakeAssignment(g, 0);
  a.set_model_sha("12:34");
  expect_failed(a, absl::StatusCode::kFailedPrecondition, "the coordinator's model has 12");
  a = MakeAssignment(g, 0);
  a.set_kv_cache_bytes(1000);  // less than one block
  expect_failed(a, absl::StatusCode::kInvalidArgument, "holds no block");
  a = MakeAssignment(g, 0);
  a.clear_vocab_widths();
  expect_failed(a, absl::StatusCode::kInvalidArgument, "0 vocab_widths for tp 1");
  // Still registered and able to take a good one.
  Form(g);
}

TEST(Worker, AnotherVersionIsRefusedAndRunReturnsTheRefusal) {
  FakeCoordinator coordinator(0, "9.9.9");
  RunningWorker w(Options(coordinator.address(), "old-1"));
  auto s = w.Wait();
  ASSERT_TRUE(s.has_value()) << "Run did not return after the refusal";
  EXPECT_EQ(s->code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s->message(), HasSubstr("refused worker old-1"));
  EXPECT_THAT(s->message(), HasSubstr("'9.9.9'"));
  EXPECT_EQ(coordinator.n_registers(), 1u);  // no retry
}

TEST(Worker, DialsUntilTheCoordinatorComesUp) {
  // A port that is free now; the coordinator starts there only after the worker
  // began dialing.
  auto probe = TcpListener::Listen("127.0.0.1:0");
  ASSERT_TRUE(probe.ok()) << probe.status();
  const int port = (*probe)->port();
  probe->reset();
  RunningWorker w(Options(absl::StrCat("127.0.0.1:", port), "late-1"));
  absl::SleepFor(absl::Milliseconds(500));
  FakeCoordinator coordinator(port);
  auto conns = coordinator.WaitConns(1);
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0]->reg().worker_id(), "late-1");
}

TEST(Worker, ReturnsUnavailableWhenTheCoordinatorStaysAway) {
  auto coordinator = std::make_unique<FakeCoordinator>();
  WorkerOptions o = Options(coordinator->address(), "orphan-1");
  o.reconnect_timeout = absl::Milliseconds(500);
  RunningWorker w(o);
  Group g;
  g.ranks = coordinator->WaitConns(1);
  ASSERT_EQ(g.ranks.size(), 1u);
  Form(g);  // holding a loaded shard when the coordinator goes
  coordinator.reset();
  auto s = w.Wait();
  ASSERT_TRUE(s.has_value()) << "Run did not return after the coordinator disappeared";
  EXPECT_EQ(s->code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s->message(), HasSubstr("could not re-register with the coordinator"));
}

TEST(Worker, ReRegistersWhenTheCoordinatorComesBack) {
  auto coordinator = std::make_unique<FakeCoordinator>();
  const int port = coordinator->port();
  WorkerOptions o = Options(coordinator->address(), "phoenix-1");
  o.reconnect_timeout = absl::Seconds(20);
  RunningWorker w(o);
  ASSERT_EQ(coordinator->WaitConns(1).size(), 1u);
  coordinator.reset();
  coordinator = std::make_unique<FakeCoordinator>(port);  // the same address again
  Group g;
  g.ranks = coordinator->WaitConns(1);
  ASSERT_EQ(g.ranks.size(), 1u);
  EXPECT_EQ(g.ranks[0]->reg().worker_id(), "phoenix-1");
  Form(g);
  if (HasFatalFailure()) return;
  const auto out = Generate(g, {kPrompts[1]}, 3);
  ExpectGreedy(kPrompts[1], out[0], true);
}

TEST(Worker, StopEndsRunWhileDialingAndWhileAttached) {
  auto probe = TcpListener::Listen("127.0.0.1:0");
  ASSERT_TRUE(probe.ok()) << probe.status();
  const int port = (*probe)->port();
  probe->reset();
  {
    RunningWorker dialing(Options(absl::StrCat("127.0.0.1:", port), "stop-1"));
    absl::SleepFor(absl::Milliseconds(300));
    dialing.worker()->Stop();
    auto s = dialing.Wait();
    ASSERT_TRUE(s.has_value()) << "Stop did not end Run while dialing";
    EXPECT_TRUE(s->ok()) << *s;
  }
  FakeCoordinator coordinator;
  RunningWorker attached(Options(coordinator.address(), "stop-2"));
  auto conns = coordinator.WaitConns(1);
  ASSERT_EQ(conns.size(), 1u);
  attached.worker()->Stop();
  auto s = attached.Wait();
  ASSERT_TRUE(s.has_value()) << "Stop did not end Run while attached";
  EXPECT_TRUE(s->ok()) << *s;
  EXPECT_TRUE(conns[0]->WaitEnded());
}

TEST(Worker, OptionsAreChecked) {
  WorkerOptions o = Options("", "x");
  EXPECT_THAT(Worker::Create(o).status().message(), HasSubstr("coordinator is empty"));
  o = Options("127.0.0.1:1", "x");
  o.threads = 0;
  EXPECT_THAT(Worker::Create(o).status().message(), HasSubstr("threads must be at least 1"));
  o = Options("127.0.0.1:1", "x");
  o.device = "tpu";
  EXPECT_EQ(Worker::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options("127.0.0.1:1", "");
  auto a = Worker::Create(o);
  auto b = Worker::Create(o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->id(), (*b)->id());  // "host:pid" and "host:pid:N"
}

}  // namespace
}  // namespace tessera
