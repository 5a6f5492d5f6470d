// Cluster: the coordinator side of worker.proto over a real gRPC server on loopback, driven by
// scripted workers (tests/coordinator/cluster_testutil.h) that run real engines on a tiny
// synthetic llama. Greedy tokens through a formed group are compared with one unsharded engine
// whose argmax the test takes itself; failures (a crash mid-step, an error StepResult, a
// Failed assignment, silence) must end the epoch with UNAVAILABLE naming the worker, and the
// group must form again with a new epoch.
#include "coordinator/cluster.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "metrics/metrics.h"
#include "model/engine.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "tests/common/tiny_llama.h"
#include "tests/coordinator/cluster_testutil.h"
#include "sharding/weight_types.h"
#include "worker/grpc_server.h"
#include "worker/worker.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using testing_util::FakeWorker;
using testing_util::FakeWorkerOptions;

constexpr char kVersion[] = "test-1";
const absl::Duration kWait = absl::Seconds(20);  // a bound, never an expectation

const SyntheticWeights& Weights() {
  static const SyntheticWeights* w = [] {
    auto made = SyntheticWeights::Create(testing_util::TinyLlamaConfig(), GgmlType::kQ8_0, 42);
    EXPECT_TRUE(made.ok()) << made.status();
    return made->release();
  }();
  return *w;
}

WeightTypes Q8Types(const ModelConfig& c) {
  WeightTypes t;
  t.source = "synthetic Q8_0";
  t.token_embd = t.output = GgmlType::kQ8_0;
  LayerWeightTypes l;
  l.attn_q = l.attn_k = l.attn_v = l.attn_output = GgmlType::kQ8_0;
  l.ffn_gate = l.ffn_up = l.ffn_down = GgmlType::kQ8_0;
  t.layers.assign(c.n_layers, l);
  return t;
}

ClusterOptions Options(int tp, int pp, int replicas) {
  ClusterOptions o;
  o.model_path = "/models/tiny.gguf";
  o.config = testing_util::TinyLlamaConfig();
  o.weight_types = Q8Types(o.config);
  o.tp = tp, o.pp = pp, o.replicas = replicas;
  o.kv_block_tokens = 4;
  o.communicator_timeout = absl::Seconds(10);
  o.step_timeout = absl::Seconds(30);
  o.retry_delay = absl::Milliseconds(50);
  o.version = kVersion;
  o.plan_options.context_tokens = 64;
  return o;
}

using Prompts = std::vector<std::vector<int32_t>>;
const Prompts kPrompts = {{1, 17, 42, 5, 88, 3}, {7, 7, 60}};
constexpr int kNewTokens = 6;

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// Greedy tokens of every prompt on one unsharded engine, batched as GenerateOn batches them
// (all prompts in the first step, then one decode token each per step): kernels may round
// differently for another batch shape, so the batches are the same.
Prompts ReferenceGreedy(const WeightSource& w = Weights(), const Prompts& prompts = kPrompts,
                        int n_new = kNewTokens) {
  CpuBackend backend(1);
  EngineOptions eo;
  eo.kv_budget_bytes = 8 << 20;
  eo.kv_block_tokens = 4;
  auto engine = Engine::Create(w, ModelShard::Whole(w.config()), &backend, nullptr, eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  const int64_t n_vocab = w.config().n_vocab;
  Prompts out(prompts.size());
  std::vector<float> logits;
  for (int t = 0; t < n_new; ++t) {
    std::vector<StepInput> batch;
    for (size_t i = 0; i < prompts.size(); ++i) {
      batch.push_back({i + 1, t == 0 ? prompts[i] : std::vector<int32_t>{out[i].back()}, true});
    }
    absl::Status s = (*engine)->Step(batch, &logits);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return {};
    for (size_t i = 0; i < prompts.size(); ++i) {
      out[i].push_back(Argmax(logits.data() + i * n_vocab, n_vocab));
    }
  }
  return out;
}

// Greedy generation of every prompt at once through an executor, the way the scheduler drives
// it: fresh sequences of the current epoch, block tables from a mirror of the workers' caches.
absl::StatusOr<Prompts> GenerateOn(StepExecutor* ex, const Prompts& prompts = kPrompts,
                                   int n_new = kNewTokens) {
  const ExecutorState st = ex->state();
  if (!st.ready) return absl::UnavailableError("not ready: " + st.description);
  KvBlockManager mirror(st.kv_blocks, st.kv_block_tokens);
  Prompts out(prompts.size());
  for (int t = 0; t < n_new; ++t) {
    v1::Step step;
    step.set_step_id(static_cast<uint64_t>(t + 1));
    for (size_t i = 0; i < prompts.size(); ++i) {
      v1::SeqInput* in = step.add_inputs();
      const SeqId id = i + 1;
      in->set_seq_id(id);
      in->set_position(static_cast<uint32_t>(mirror.Length(id)));
      if (t == 0) {
        in->mutable_tokens()->Add(prompts[i].begin(), prompts[i].end());
        in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
      } else {
        in->add_tokens(out[i].back());
      }
      in->set_sample(true);
      const int64_t length = mirror.Length(id) + in->tokens_size();
      absl::Status s = mirror.Reserve(id, length);
      if (s.ok()) s = mirror.SetLength(id, length);
      if (!s.ok()) return s;
      for (int32_t b : mirror.BlockTable(id)) in->add_block_table(b);
    }
    absl::StatusOr<v1::StepResult> r = ex->Execute(step);
    if (!r.ok()) return r.status();
    if (r->sampled_size() != static_cast<int>(prompts.size())) {
      return absl::InternalError(absl::StrCat("step ", t + 1, ": ", r->sampled_size(),
                                              " sampled sequences"));
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (r->sampled(i).seq_id() != i + 1) return absl::InternalError("sampled out of order");
      out[i].push_back(r->sampled(i).token().id());
    }
  }
  return out;
}

class ClusterTest : public ::testing::Test {
 protected:
  void Start(ClusterOptions o) {
    auto c = Cluster::Create(std::move(o));
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = *std::move(c);
    auto s = StartGrpcServer("127.0.0.1:0", {cluster_.get()});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(s->server);
    address_ = absl::StrCat("127.0.0.1:", s->port);
  }

  FakeWorker* Add(const std::string& id, FakeWorkerOptions o = {}) {
    o.coordinator = address_;
    o.id = id;
    if (o.version.empty()) o.version = kVersion;
    o.weights = &Weights();
    workers_.push_back(std::make_unique<FakeWorker>(o));
    return workers_.back().get();
  }

  // Adds a worker and waits until the cluster has registered it (so placement follows the
  // order of the calls).
  FakeWorker* AddAndWait(const std::string& id, FakeWorkerOptions o = {}) {
    FakeWorker* w = Add(id, o);
    const absl::Time until = absl::Now() + kWait;
    while (absl::Now() < until && WorkerInfo(id) == nullptr) absl::SleepFor(absl::Milliseconds(5));
    EXPECT_NE(WorkerInfo(id), nullptr) << id << " never registered";
    return w;
  }

  const v1::WorkerInfo* WorkerInfo(const std::string& id) {
    infos_ = cluster_->WorkerInfos();
    for (const v1::WorkerInfo& w : infos_) {
      if (w.worker_id() == id) return &w;
    }
    return nullptr;
  }

  void TearDown() override {
    if (cluster_) cluster_->Shutdown("test over");
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    workers_.clear();
    server_.reset();
    cluster_.reset();
  }

  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::vector<std::unique_ptr<FakeWorker>> workers_;
  std::vector<v1::WorkerInfo> infos_;
};

TEST_F(ClusterTest, RefusesImpossibleLayoutsWithThePlannersReason) {
  // The tiny llama has 2 KV heads and 2 layers.
  auto tp3 = Cluster::Create(Options(3, 1, 1));
  ASSERT_FALSE(tp3.ok());
  EXPECT_EQ(tp3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tp3.status().message(), HasSubstr("TP=3 x PP=1"));
  EXPECT_THAT(tp3.status().message(), HasSubstr("KV head"));
  auto pp3 = Cluster::Create(Options(1, 3, 1));
  ASSERT_FALSE(pp3.ok());
  EXPECT_THAT(pp3.status().message(), HasSubstr("layer"));
  auto r0 = Cluster::Create(Options(1, 1, 0));
  ASSERT_FALSE(r0.ok());
  EXPECT_THAT(r0.status().message(), HasSubstr("replicas must be at least 1, got 0"));
}

TEST_F(ClusterTest, TensorParallelGroupFormsAndMatchesSingleEngineGreedy) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(2, 1, 1)));
  FakeWorkerOptions small;
  small.kv_budget_bytes = 256 << 10;  // fewer blocks than w0: the group takes the minimum
  AddAndWait("w0");
  AddAndWait("w1", small);
  ExecutorState st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 1u);

  // Both ranks' capacities, computed here from the assignments the workers received.
  const std::vector<v1::Assignment> a0 = workers_[0]->assignments();
  const std::vector<v1::Assignment> a1 = workers_[1]->assignments();
  ASSERT_EQ(a0.size(), 1u);
  ASSERT_EQ(a1.size(), 1u);
  EXPECT_EQ(a0[0].rank(), 0u);
  EXPECT_EQ(a1[0].rank(), 1u);
  EXPECT_TRUE(a0[0].sampler());  // last (only) stage, tp_rank 0
  EXPECT_FALSE(a1[0].sampler());
  EXPECT_THAT(a0[0].vocab_widths(), ::testing::ElementsAre(48, 48));
  EXPECT_EQ(a0[0].shard().kv_head_end(), 1u);
  EXPECT_EQ(a1[0].shard().kv_head_begin(), 1u);
  EXPECT_EQ(a0[0].model_path(), "/models/tiny.gguf");
  int64_t want_blocks = -1;
  for (const auto& [a, budget] : {std::pair{a0[0], int64_t{1} << 20}, {a1[0], int64_t{256} << 10}}) {
    ModelShard shard;
    shard.layer_begin = a.shard().layer_begin(), shard.layer_end = a.shard().layer_end();
    shard.kv_head_begin = a.shard().kv_head_begin(), shard.kv_head_end = a.shard().kv_head_end();
    shard.ff_begin = a.shard().ff_begin(), shard.ff_end = a.shard().ff_end();
    shard.vocab_begin = a.shard().vocab_begin(), shard.vocab_end = a.shard().vocab_end();
    EngineOptions eo;
    eo.kv_budget_bytes = budget;
    eo.kv_block_tokens = 4;
    auto cap = Engine::KvBlockCapacity(Weights().config(), shard, eo);
    ASSERT_TRUE(cap.ok()) << cap.status();
    want_blocks = want_blocks < 0 ? *cap : std::min(want_blocks, *cap);
  }
  EXPECT_EQ(st.kv_blocks, want_blocks);

  auto got = GenerateOn(cluster_->executor(0));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, ReferenceGreedy());

  v1::ModelInfo info;
  cluster_->FillModelInfo(&info);
  EXPECT_EQ(info.tensor_parallel(), 2u);
  EXPECT_EQ(info.ready_replicas(), 1u);
  ASSERT_EQ(info.replica_info_size(), 1);
  EXPECT_EQ(info.replica_info(0).state(), "ready");
  EXPECT_EQ(info.replica_info(0).kv_blocks_total(), static_cast<uint32_t>(want_blocks));
  ASSERT_EQ(info.workers_size(), 2);
  EXPECT_EQ(info.workers(1).worker_id(), "w1");
  EXPECT_EQ(info.workers(1).rank(), 1);
  EXPECT_EQ(info.workers(1).tp_rank(), 1);
  EXPECT_EQ(info.workers(1).pp_stage(), 0);
  EXPECT_EQ(info.workers(1).weight_bytes(), 1001u);  // from its Ready
}

TEST_F(ClusterTest, PipelineReplicasFillLowestReplicaFirstAndBothServe) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(1, 2, 2)));
  for (const char* id : {"a", "b", "c", "d"}) AddAndWait(id);
  for (int r = 0; r < 2; ++r) {
    ExecutorState st = cluster_->executor(r)->WaitReady(kWait);
    ASSERT_TRUE(st.ready) << "replica " << r << ": " << st.description;
  }
  EXPECT_EQ(WorkerInfo("b")->replica(), 0);
  EXPECT_EQ(WorkerInfo("b")->pp_stage(), 1);
  EXPECT_EQ(WorkerInfo("c")->replica(), 1);
  EXPECT_EQ(WorkerInfo("c")->pp_stage(), 0);
  EXPECT_TRUE(workers_[1]->assignments().at(0).sampler());  // b: last stage of replica 0
  const auto want = ReferenceGreedy();
  for (int r = 0; r < 2; ++r) {
    auto got = GenerateOn(cluster_->executor(r));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "replica " << r;
  }
}

TEST_F(ClusterTest, RefusesAnotherVersionAndADuplicateId) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(2, 1, 1)));
  FakeWorkerOptions old;
  old.version = "test-0";
  FakeWorker* w = Add("old", old);
  ASSERT_TRUE(w->WaitFinished(kWait));
  ASSERT_TRUE(w->refused().has_value());
  EXPECT_EQ(w->refused()->code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(w->refused()->message(), HasSubstr("'test-0'"));
  EXPECT_THAT(w->refused()->message(), HasSubstr("'test-1'"));
  EXPECT_EQ(w->final_status().error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  AddAndWait("same");
  FakeWorker* dup = Add("same");
  ASSERT_TRUE(dup->WaitFinished(kWait));
  ASSERT_TRUE(dup->refused().has_value());
  EXPECT_EQ(dup->final_status().error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(dup->refused()->message(), HasSubstr("'same' is already attached"));
  EXPECT_EQ(cluster_->WorkerInfos().size(), 1u);
  // The refused ones left no trace: the group still waits for its second rank.
  EXPECT_EQ(cluster_->ReplicaInfos().at(0).state(), "waiting_for_workers");
}

TEST_F(ClusterTest, FirstMessageMustBeRegister) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(1, 1, 1)));
  auto stub = v1::Coordinator::NewStub(
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto stream = stub->Attach(&ctx);
  v1::WorkerMessage m;
  m.mutable_ready()->set_assignment_id(1);
  stream->Write(m);
  stream->WritesDone();
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("must be Register, got Ready"));
}

TEST_F(ClusterTest, WorkerDyingMidStepFailsExecuteAndANewWorkerReformsTheGroup) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(2, 1, 1)));
  FakeWorkerOptions dies;
  dies.die_at_step = 2;
  FakeWorker* w0 = AddAndWait("w0");
  AddAndWait("w1", dies);
  ASSERT_TRUE(cluster_->executor(0)->WaitReady(kWait).ready);

  auto got = GenerateOn(cluster_->executor(0));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(got.status().message(), HasSubstr("worker w1"));
  ExecutorState st = cluster_->executor(0)->state();
  EXPECT_FALSE(st.ready);
  EXPECT_EQ(st.epoch, 1u);
  auto again = cluster_->executor(0)->Execute(v1::Step());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);

  // The dead worker's slot waits for a new worker; the survivor keeps rank 0.
  const absl::Time until = absl::Now() + kWait;
  while (absl::Now() < until && (WorkerInfo("w1") != nullptr || w0->resets() == 0)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(WorkerInfo("w1"), nullptr);
  EXPECT_GE(w0->resets(), 1);
  EXPECT_EQ(cluster_->ReplicaInfos().at(0).state(), "waiting_for_workers");

  FakeWorker* w2 = AddAndWait("w2");
  st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 2u);
  EXPECT_EQ(w2->assignments().at(0).rank(), 1u);
  EXPECT_EQ(w0->assignments().back().rank(), 0u);
  EXPECT_EQ(w0->assignments().size(), 2u);
  got = GenerateOn(cluster_->executor(0));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, ReferenceGreedy());
}

TEST_F(ClusterTest, ErrorStepResultEndsTheEpochAndTheSameWorkersFormAgain) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(2, 1, 1)));
  FakeWorkerOptions fails;
  fails.fail_step = 3;
  FakeWorker* w0 = AddAndWait("w0");
  FakeWorker* w1 = AddAndWait("w1", fails);
  ASSERT_TRUE(cluster_->executor(0)->WaitReady(kWait).ready);
  auto got = GenerateOn(cluster_->executor(0));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(got.status().message(), HasSubstr("worker w1"));
  EXPECT_THAT(got.status().message(), HasSubstr("scripted step failure"));
  EXPECT_THAT(got.status().message(), HasSubstr("failed step 3"));

  // Every slot is still filled: the group forms again after the retry delay.
  ExecutorState st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 2u);
  EXPECT_GE(w0->resets(), 1);
  EXPECT_GE(w1->resets(), 1);
  got = GenerateOn(cluster_->executor(0));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, ReferenceGreedy());
}

TEST_F(ClusterTest, FailedAssignmentShowsAsFailedUntilTheSlotIsRefilled) {
  ClusterOptions o = Options(1, 1, 1);
  o.retry_delay = absl::Hours(1);  // no retry with the same worker within the test
  ASSERT_NO_FATAL_FAILURE(Start(o));
  FakeWorkerOptions broken;
  broken.fail_assignments = 1;
  FakeWorker* w0 = AddAndWait("w0", broken);
  const absl::Time until = absl::Now() + kWait;
  while (absl::Now() < until && cluster_->ReplicaInfos().at(0).state() != "failed") {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(cluster_->ReplicaInfos().at(0).state(), "failed");
  ExecutorState st = cluster_->executor(0)->state();
  EXPECT_FALSE(st.ready);
  EXPECT_THAT(st.description, HasSubstr("worker w0"));
  EXPECT_THAT(st.description, HasSubstr("no model at /models/tiny.gguf"));

  // A spare does not replace a live worker...
  AddAndWait("w1");
  EXPECT_EQ(WorkerInfo("w1")->replica(), -1);
  // ...but fills its slot when it goes, and the group forms at once.
  w0->Kill();
  st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 1u);
  EXPECT_EQ(WorkerInfo("w1")->rank(), 0);
  auto got = GenerateOn(cluster_->executor(0));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, ReferenceGreedy());
}

TEST_F(ClusterTest, SpareWorkerTakesOverTheSlotOfADeadOne) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(1, 1, 1)));
  FakeWorker* w0 = AddAndWait("w0");
  ASSERT_TRUE(cluster_->executor(0)->WaitReady(kWait).ready);
  FakeWorker* spare = AddAndWait("spare");
  const v1::WorkerInfo* info = WorkerInfo("spare");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->replica(), -1);
  EXPECT_EQ(info->rank(), -1);
  EXPECT_TRUE(spare->assignments().empty());
  w0->Kill();
  const absl::Time until = absl::Now() + kWait;
  ExecutorState st;
  while (absl::Now() < until) {
    st = cluster_->executor(0)->WaitReady(absl::Milliseconds(50));
    if (st.ready && st.epoch >= 2) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 2u);
  EXPECT_EQ(WorkerInfo("spare")->rank(), 0);
}

// The value of the sample of `family` whose labels include every one of `labels` (e.g.
// `worker="w1"`), from the Prometheus text exposition of `registry`; NaN if there is none.
double Sample(prometheus::Registry& registry, const std::string& family,
              const std::vector<std::string>& labels) {
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, family + "{")) continue;
    bool all = true;
    for (const std::string& l : labels) all = all && absl::StrContains(line, l);
    double v = 0;
    if (all && absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) return v;
  }
  return std::nan("");
}

TEST_F(ClusterTest, MetricsFollowWorkersAndReadiness) {
  prometheus::Registry registry;
  CoordinatorMetrics metrics(registry);
  ClusterOptions o = Options(2, 1, 1);
  o.metrics = &metrics;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  EXPECT_EQ(Sample(registry, "tessera_replica_ready", {"replica=\"0\""}), 0.0);
  AddAndWait("w0");
  FakeWorker* w1 = AddAndWait("w1");
  ASSERT_TRUE(cluster_->executor(0)->WaitReady(kWait).ready);
  EXPECT_EQ(Sample(registry, "tessera_replica_ready", {"replica=\"0\""}), 1.0);
  EXPECT_EQ(Sample(registry, "tessera_worker_up", {"worker=\"w1\"", "rank=\"1\""}), 1.0);
  // The fake reports weight_bytes 1000 + rank in its Ready.
  EXPECT_EQ(Sample(registry, "tessera_device_memory_bytes",
                   {"worker=\"w1\"", "category=\"weights\""}),
            1001.0);
  w1->Kill();
  const absl::Time until = absl::Now() + kWait;
  while (absl::Now() < until && WorkerInfo("w1") != nullptr) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(Sample(registry, "tessera_worker_up", {"worker=\"w1\""}), 0.0);
  EXPECT_EQ(Sample(registry, "tessera_worker_up", {"worker=\"w0\""}), 1.0);
  EXPECT_EQ(Sample(registry, "tessera_replica_ready", {"replica=\"0\""}), 0.0);
  cluster_->Shutdown("test over");  // before `metrics` goes
}

TEST_F(ClusterTest, SilentRankMakesExecuteGiveUpAtTheStepTimeout) {
  ClusterOptions o = Options(1, 1, 1);
  o.step_timeout = absl::Seconds(1);
  ASSERT_NO_FATAL_FAILURE(Start(o));
  FakeWorkerOptions silent;
  silent.silent_at_step = 1;
  AddAndWait("quiet", silent);
  ASSERT_TRUE(cluster_->executor(0)->WaitReady(kWait).ready);
  auto got = GenerateOn(cluster_->executor(0));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(got.status().message(), HasSubstr("no answer"));
  EXPECT_THAT(got.status().message(), HasSubstr("worker quiet"));
}

TEST_F(ClusterTest, ShutdownReachesWorkersAndReleasesWaiters) {
  ASSERT_NO_FATAL_FAILURE(Start(Options(2, 1, 1)));
  FakeWorker* w0 = AddAndWait("w0");
  ExecutorState waited;
  std::thread waiter([&] { waited = cluster_->executor(0)->WaitReady(absl::Minutes(5)); });
  cluster_->Shutdown("maintenance");
  waiter.join();
  EXPECT_FALSE(waited.ready);
  EXPECT_THAT(waited.description, HasSubstr("maintenance"));
  ASSERT_TRUE(w0->WaitFinished(kWait));
  EXPECT_TRUE(w0->got_shutdown());
  auto r = cluster_->executor(0)->Execute(v1::Step());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  // Registrations after shutdown are refused.
  FakeWorker* late = Add("late");
  ASSERT_TRUE(late->WaitFinished(kWait));
  EXPECT_EQ(late->final_status().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// A real Worker (worker/worker.h) running on its own thread, as `tessera worker` would.
class RealWorker {
 public:
  RealWorker(const std::string& coordinator, const std::string& id) {
    WorkerOptions o;
    o.coordinator = coordinator;
    o.listen = "127.0.0.1:0";
    o.id = id;
    o.threads = 1;
    o.kv_cache_bytes = 8 << 20;
    o.connect_timeout = absl::Seconds(20);
    o.reconnect_timeout = absl::Seconds(1);
    auto w = Worker::Create(o);
    EXPECT_TRUE(w.ok()) << w.status();
    if (!w.ok()) return;
    worker_ = *std::move(w);
    thread_ = std::thread([this] { result_ = worker_->Run(); });
  }
  ~RealWorker() { Stop(); }
  // Ends the worker; its stream ends as a crashed process's would (from the coordinator's view).
  void Stop() {
    if (worker_) worker_->Stop();
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return worker_ != nullptr; }

 private:
  std::unique_ptr<Worker> worker_;
  std::thread thread_;
  absl::Status result_;
};

// The real model through real Workers: a PP=2 group serves the same greedy tokens as one
// engine with the whole model (pipeline stages hand exact float hidden states over, and no
// sum is split, so the tokens must be identical); a stopped stage ends the epoch and a new
// worker re-forms the group.
TEST_F(ClusterTest, RealWorkersServeThePipelineAndReformAfterOneStops) {
  const char* env = std::getenv("TESSERA_TEST_MODEL");
  const std::string path = env != nullptr ? env : "";
  if (path.empty() || !std::filesystem::exists(path)) {
    GTEST_SKIP() << "TESSERA_TEST_MODEL (the real model) is not available: '" << path << "'";
  }
  auto model = OpenGgufModel(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& config = model->weights->config();
  auto types = WeightTypesFromFile(*model->file, config);
  ASSERT_TRUE(types.ok()) << types.status();
  ClusterOptions o;
  o.model_path = path;
  o.config = config;
  o.weight_types = *types;
  o.tp = 1, o.pp = 2;
  o.kv_block_tokens = 4;
  o.kv_cache_bytes = 8 << 20;
  o.version = kWorkerProtocolVersion;
  o.communicator_timeout = absl::Seconds(10);
  o.plan_options.context_tokens = 256;
  ASSERT_NO_FATAL_FAILURE(Start(o));

  const Prompts prompts = {{1, 4093, 314, 253, 5248}, {1, 20, 3000}};
  const int n_new = 3;
  const Prompts want = ReferenceGreedy(*model->weights, prompts, n_new);
  ASSERT_EQ(want.size(), 2u);

  auto first = std::make_unique<RealWorker>(address_, "stage0");
  auto second = std::make_unique<RealWorker>(address_, "stage1");
  ASSERT_TRUE(first->ok() && second->ok());
  ExecutorState st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  auto got = GenerateOn(cluster_->executor(0), prompts, n_new);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, want);
  const v1::WorkerInfo* info = WorkerInfo("stage1");
  ASSERT_NE(info, nullptr);
  EXPECT_GT(info->weight_bytes(), 0u);  // from its Ready

  const std::string gone = WorkerInfo("stage0")->rank() == 1 ? "stage0" : "stage1";
  (gone == "stage0" ? first : second)->Stop();
  const absl::Time until = absl::Now() + kWait;
  while (absl::Now() < until && WorkerInfo(gone) != nullptr) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_FALSE(cluster_->executor(0)->state().ready);

  RealWorker third(address_, "stage1-again");
  ASSERT_TRUE(third.ok());
  st = cluster_->executor(0)->WaitReady(kWait);
  ASSERT_TRUE(st.ready) << st.description;
  EXPECT_EQ(st.epoch, 2u);
  got = GenerateOn(cluster_->executor(0), prompts, n_new);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, want);
  cluster_->Shutdown("test over");  // the workers leave on Shutdown
}

}  // namespace
}  // namespace tessera
