// Engine on a tiny synthetic llama: batching, chunked prefill, KV accounting, bad input, and
// the sharding seams (tensor- and pipeline-parallel shards joined by in-process hooks must
// give the whole model's logits). The forward pass's numerical correctness against an
// independent float64 reference is checked on the real model by
// tests/python/test_engine_reference.py.
#include "model/engine.h"

#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"
#include "tests/common/tiny_llama.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/weights.h"

namespace tessera {
namespace {

ModelConfig TinyConfig() { return testing_util::TinyLlamaConfig(); }

std::unique_ptr<SyntheticWeights> TinyWeights(GgmlType type = GgmlType::kQ8_0) {
  auto w = SyntheticWeights::Create(TinyConfig(), type, 42);
  EXPECT_TRUE(w.ok()) << w.status();
  return *std::move(w);
}

std::unique_ptr<Engine> MakeEngine(const WeightSource& w, Backend* backend,
                                   int64_t kv_bytes = 1 << 20) {
  EngineOptions opts;
  opts.kv_budget_bytes = kv_bytes;
  opts.kv_block_tokens = 4;
  auto e = Engine::Create(w, ModelShard::Whole(w.config()), backend, nullptr, opts);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

int Argmax(const float* v, int64_t n) {
  return static_cast<int>(std::max_element(v, v + n) - v);
}

// Greedy continuation of `prompt` for n tokens, running alone.
std::vector<int32_t> Greedy(Engine* e, SeqId id, std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> out;
  std::vector<float> logits;
  StepInput in{id, prompt, true};
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(e->Step({in}, &logits).ok());
    const int32_t next = Argmax(logits.data(), e->config().n_vocab);
    out.push_back(next);
    in.tokens = {next};
  }
  return out;
}

TEST(Engine, BatchedSequencesMatchRunningAlone) {
  auto w = TinyWeights();
  CpuBackend backend(2);
  auto alone = MakeEngine(*w, &backend);
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9}, {7, 3, 3, 2, 8, 11, 4}, {60}};
  std::vector<std::vector<int32_t>> expected;
  for (size_t i = 0; i < prompts.size(); ++i) expected.push_back(Greedy(alone.get(), i, prompts[i], 6));

  CpuBackend backend2(3);
  auto batched = MakeEngine(*w, &backend2);
  std::vector<StepInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) inputs.push_back({100 + i, prompts[i], true});
  std::vector<std::vector<int32_t>> got(prompts.size());
  std::vector<float> logits;
  const int64_t V = batched->config().n_vocab;
  for (int step = 0; step < 6; ++step) {
    ASSERT_TRUE(batched->Step(inputs, &logits).ok());
    ASSERT_EQ(logits.size(), prompts.size() * V);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int32_t next = Argmax(logits.data() + i * V, V);
      got[i].push_back(next);
      inputs[i].tokens = {next};
    }
  }
  EXPECT_EQ(got, expected);
}

TEST(Engine, ChunkedPrefillEqualsOneShotPrefill) {
  auto w = TinyWeights(GgmlType::kQ4_0);
  CpuBackend backend(2);
  auto e = MakeEngine(*w, &backend);
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46};
  std::vector<float> one_shot, chunked, logits;
  ASSERT_TRUE(e->Step({{1, prompt, true}}, &one_shot).ok());
  for (size_t pos = 0; pos < prompt.size(); pos += 3) {
    const size_t end = std::min(prompt.size(), pos + 3);
    std::vector<int32_t> part(prompt.begin() + pos, prompt.begin() + end);
    ASSERT_TRUE(e->Step({{2, part, end == prompt.size()}}, &logits).ok());
  }
  chunked = logits;
  ASSERT_EQ(one_shot.size(), chunked.size());
  for (size_t i = 0; i < one_shot.size(); ++i) {
    EXPECT_NEAR(one_shot[i], chunked[i], 1e-5f * (1.0f + std::fabs(one_shot[i]))) << i;
  }
  EXPECT_EQ(e->Length(1), 11);
  EXPECT_EQ(e->Length(2), 11);
}

TEST(Engine, FullKvCacheIsRefusedAndChangesNothing) {
  auto w = TinyWeights();
  CpuBackend backend(1);
  // One block = 2 (K, V) * 2 layers * 4 tokens * 2 heads * 16 dims * (4 or 2) bytes.
  const int64_t block_bytes = 2 * 2 * 4 * 2 * 16 * KvTypeBytes(backend.PreferredKvType());
  auto e = MakeEngine(*w, &backend, 3 * block_bytes);
  ASSERT_EQ(e->kv().n_blocks(), 3);
  std::vector<float> logits;
  ASSERT_TRUE(e->Step({{1, std::vector<int32_t>(10, 5), true}}, &logits).ok());  // 3 blocks
  const absl::Status s = e->Step({{1, {6, 7, 8}, true}, {2, {1}, true}}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(e->Length(1), 10);
  EXPECT_FALSE(e->kv().Contains(2));
  e->Free(1);
  EXPECT_EQ(e->kv().free_blocks(), 3);
  EXPECT_TRUE(e->Step({{2, {1}, true}}, &logits).ok());
}

TEST(Engine, BadInputIsAClearError) {
  auto w = TinyWeights();
  CpuBackend backend(1);
  auto e = MakeEngine(*w, &backend);
  std::vector<float> logits;
  absl::Status s = e->Step({{1, {96}, true}}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside the vocabulary"), std::string::npos) << s;
  s = e->Step({{1, {}, true}}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = e->Step({{1, {1}, true}, {1, {2}, true}}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = e->Step({{1, std::vector<int32_t>(65, 1), true}}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("context length 64"), std::string::npos) << s;
  EXPECT_FALSE(e->kv().Contains(1));
}

// In-process collectives for `n` ranks running on their own threads.
class LocalGroup {
 public:
  explicit LocalGroup(int n) : n_(n), barrier_(n), ptrs_(n), cptrs_(n), widths_(n) {}
  absl::Status AllReduceSum(int rank, float* data, int64_t count) {
    ptrs_[rank] = data;
    barrier_.arrive_and_wait();
    std::vector<float> sum(static_cast<size_t>(count), 0.0f);
    for (int r = 0; r < n_; ++r) {
      for (int64_t i = 0; i < count; ++i) sum[i] += ptrs_[r][i];
    }
    barrier_.arrive_and_wait();
    std::memcpy(data, sum.data(), sum.size() * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status Gather(int rank, const float* local, int64_t rows, int64_t local_cols,
                      int64_t cols, float* full) {
    cptrs_[rank] = local;
    widths_[rank] = local_cols;
    barrier_.arrive_and_wait();
    for (int64_t row = 0; row < rows; ++row) {
      int64_t col = 0;
      for (int r = 0; r < n_; ++r) {
        std::memcpy(full + row * cols + col, cptrs_[r] + row * widths_[r], widths_[r] * 4);
        col += widths_[r];
      }
    }
    barrier_.arrive_and_wait();
    return absl::OkStatus();
  }
  // The second barrier keeps the sender from overwriting pipe_ with its next step's hidden
  // states while the receiver is still copying this one.
  absl::Status Send(const float* x, int64_t n) {
    pipe_.assign(x, x + n);
    barrier_.arrive_and_wait();
    barrier_.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status Receive(float* x, int64_t n) {
    barrier_.arrive_and_wait();
    std::memcpy(x, pipe_.data(), n * sizeof(float));
    barrier_.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  int n_;
  std::barrier<> barrier_;
  std::vector<float*> ptrs_;
  std::vector<const float*> cptrs_;
  std::vector<int64_t> widths_;
  std::vector<float> pipe_;
};

class LocalHooks : public ShardHooks {
 public:
  LocalHooks(LocalGroup* g, int rank, bool tensor_parallel)
      : g_(g), rank_(rank), tp_(tensor_parallel) {}
  absl::Status AllReduceSum(float* d, int64_t n) override {
    return tp_ ? g_->AllReduceSum(rank_, d, n) : absl::OkStatus();
  }
  absl::Status GatherLogits(const float* local, int64_t rows, int64_t lv, int64_t v,
                            float* full) override {
    return tp_ ? g_->Gather(rank_, local, rows, lv, v, full)
               : ShardHooks::GatherLogits(local, rows, lv, v, full);
  }
  absl::Status SendHidden(const float* x, int64_t n) override { return g_->Send(x, n); }
  absl::Status ReceiveHidden(float* x, int64_t n) override { return g_->Receive(x, n); }

 private:
  LocalGroup* g_;
  int rank_;
  bool tp_;
};

// Runs the same two steps on `shards` (one thread each) and returns the logits of the rank
// that produces them (the last).
std::vector<float> RunSharded(const WeightSource& w, const std::vector<ModelShard>& shards,
                              bool tensor_parallel) {
  const int n = static_cast<int>(shards.size());
  LocalGroup group(n);
  std::vector<std::unique_ptr<CpuBackend>> backends;
  std::vector<std::unique_ptr<LocalHooks>> hooks;
  std::vector<std::unique_ptr<Engine>> engines;
  EngineOptions opts;
  opts.kv_budget_bytes = 1 << 20;
  opts.kv_block_tokens = 4;
  for (int r = 0; r < n; ++r) {
    backends.push_back(std::make_unique<CpuBackend>(1));
    hooks.push_back(std::make_unique<LocalHooks>(&group, r, tensor_parallel));
    auto e = Engine::Create(w, shards[r], backends[r].get(), hooks[r].get(), opts);
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return {};
    engines.push_back(*std::move(e));
  }
  std::vector<std::vector<float>> logits(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      EXPECT_TRUE(engines[r]->Step({{1, {4, 8, 15, 16, 23}, true}, {2, {42}, true}}, &logits[r]).ok());
      EXPECT_TRUE(engines[r]->Step({{1, {30}, true}, {2, {12, 7}, true}}, &logits[r]).ok());
    });
  }
  for (auto& t : threads) t.join();
  return logits[n - 1];
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  // Partial sums are added in a different order than the unsplit dot products: float32
  // rounding, a few ulps of the logits' scale.
  double err = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (got[i] - want[i]) * double(got[i] - want[i]);
    norm += want[i] * double(want[i]);
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-5);
}

TEST(EngineSharding, TensorParallelShardsReproduceTheWholeModel) {
  auto w = TinyWeights();
  const ModelConfig& c = w->config();
  std::vector<float> whole = RunSharded(*w, {ModelShard::Whole(c)}, false);
  ModelShard a = ModelShard::Whole(c), b = ModelShard::Whole(c);
  a.kv_head_end = 1, b.kv_head_begin = 1;  // query heads follow: 0,1 | 2,3
  a.ff_end = 64, b.ff_begin = 64;
  a.vocab_end = 40, b.vocab_begin = 40;  // uneven vocab split
  ExpectClose(RunSharded(*w, {a, b}, true), whole);
}

TEST(EngineSharding, PipelineStagesReproduceTheWholeModel) {
  auto w = TinyWeights(GgmlType::kQ4_1);
  const ModelConfig& c = w->config();
  std::vector<float> whole = RunSharded(*w, {ModelShard::Whole(c)}, false);
  ModelShard a = ModelShard::Whole(c), b = ModelShard::Whole(c);
  a.layer_end = 1, b.layer_begin = 1;
  ExpectClose(RunSharded(*w, {a, b}, false), whole);
}

TEST(EngineSharding, ShardRangesAreValidated) {
  const ModelConfig c = TinyConfig();
  ModelShard s = ModelShard::Whole(c);
  s.kv_head_end = 3;
  absl::Status st = s.Validate(c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("KV head range [0, 3)"), std::string::npos) << st;
  s = ModelShard::Whole(c);
  s.ff_begin = 16, s.ff_end = 64;  // 16 is not a Q8_0 block boundary (32)
  auto w = TinyWeights();
  CpuBackend backend(1);
  auto e = Engine::Create(*w, s, &backend, nullptr, EngineOptions());
  EXPECT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("block boundaries"), std::string::npos) << e.status();
}

}  // namespace
}  // namespace tessera
