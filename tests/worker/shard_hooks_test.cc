// CommunicatorHooks: the engine's shard hooks over TcpCommunicators. The logits gather is
// checked against values that encode their own (row, column), and a tiny synthetic llama split
// tensor- and pipeline-parallel across TCP ranks on threads must reproduce the whole model's
// logits (computed by one unsharded engine).
#include "worker/shard_hooks.h"

#include <cmath>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/tiny_llama.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/worker/group_testutil.h"

namespace tessera {
namespace {

TEST(CommunicatorHooks, GatherLogitsLaysOutUnevenVocabBlocksRowMajor) {
  const std::vector<int64_t> widths = {3, 5, 1};
  const int n = 3, rows = 2, n_vocab = 9;
  auto comms = FormGroup(n, "logits");
  ASSERT_EQ(comms.size(), 3u);
  std::vector<std::vector<float>> full(n, std::vector<float>(rows * n_vocab, -1.0f));
  std::vector<absl::Status> st(n);
  OnRanks(n, [&](int r) {
    CommunicatorHooksOptions o;
    o.tensor_group = comms[r].get();
    o.vocab_widths = widths;
    CommunicatorHooks hooks(o);
    int64_t first = 0;
    for (int q = 0; q < r; ++q) first += widths[q];
    // Rank r holds (rows, widths[r]): the value at (row, j) is 100 * row + its global column.
    std::vector<float> local;
    for (int row = 0; row < rows; ++row) {
      for (int64_t j = 0; j < widths[r]; ++j) local.push_back(100.0f * row + first + j);
    }
    st[r] = hooks.GatherLogits(local.data(), rows, widths[r], n_vocab, full[r].data());
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(st[r].ok()) << st[r];
    for (int row = 0; row < rows; ++row) {
      for (int col = 0; col < n_vocab; ++col) {
        EXPECT_EQ(full[r][row * n_vocab + col], 100.0f * row + col)
            << r << " " << row << " " << col;
      }
    }
  }
}

TEST(CommunicatorHooks, WrongVocabWidthsAreAClearError) {
  auto comms = FormGroup(2, "widths");
  ASSERT_EQ(comms.size(), 2u);
  CommunicatorHooksOptions o;
  o.tensor_group = comms[0].get();
  o.vocab_widths = {4, 4};
  CommunicatorHooks hooks(o);
  std::vector<float> local(4), full(10);
  absl::Status s = hooks.GatherLogits(local.data(), 1, 4, 10, full.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("n_vocab 10"));
}

ModelConfig TinyConfig() { return testing_util::TinyLlamaConfig(); }

EngineOptions SmallKv() {
  EngineOptions opts;
  opts.kv_budget_bytes = 1 << 20;
  opts.kv_block_tokens = 4;
  return opts;
}

// Two steps (a prefill of two sequences, then a mixed decode/prefill) on one engine.
absl::Status RunSteps(Engine* e, std::vector<float>* logits) {
  absl::Status s = e->Step({{1, {4, 8, 15, 16, 23}, true}, {2, {42}, true}}, logits);
  if (!s.ok()) return s;
  return e->Step({{1, {30}, true}, {2, {12, 7}, true}}, logits);
}

double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * double(got[i] - want[i]);
    norm += want[i] * double(want[i]);
  }
  return std::sqrt(err / norm);
}

// Splits the model into tp x pp shards: stage s owns an equal share of the layers, TP rank t
// its KV heads, FFN rows and an uneven vocab slice. Each rank runs on its own thread with a
// TCP group for its stage's TP ranks and one for its TP index's stages. Returns the logits of
// every last-stage rank.
std::vector<std::vector<float>> RunOverTcp(const WeightSource& w, int tp, int pp,
                                           const std::vector<int64_t>& vocab_widths) {
  const ModelConfig& c = w.config();
  std::vector<std::vector<std::unique_ptr<TcpCommunicator>>> tp_groups, pp_groups;
  for (int s = 0; s < pp; ++s) {
    tp_groups.push_back(tp > 1 ? FormGroup(tp, "tp/stage" + std::to_string(s))
                               : std::vector<std::unique_ptr<TcpCommunicator>>(1));
    if (tp > 1 && tp_groups.back().size() != static_cast<size_t>(tp)) return {};
  }
  for (int t = 0; t < tp; ++t) {
    pp_groups.push_back(pp > 1 ? FormGroup(pp, "pp/tp" + std::to_string(t))
                               : std::vector<std::unique_ptr<TcpCommunicator>>(1));
    if (pp > 1 && pp_groups.back().size() != static_cast<size_t>(pp)) return {};
  }
  const int n = tp * pp;
  std::vector<std::unique_ptr<CpuBackend>> backends(n);
  std::vector<std::unique_ptr<CommunicatorHooks>> hooks(n);
  std::vector<std::unique_ptr<Engine>> engines(n);
  for (int s = 0; s < pp; ++s) {
    for (int t = 0; t < tp; ++t) {
      const int r = s * tp + t;
      ModelShard shard = ModelShard::Whole(c);
      shard.layer_begin = c.n_layers * s / pp, shard.layer_end = c.n_layers * (s + 1) / pp;
      shard.kv_head_begin = c.n_kv_heads * t / tp, shard.kv_head_end = c.n_kv_heads * (t + 1) / tp;
      shard.ff_begin = c.n_ff * t / tp, shard.ff_end = c.n_ff * (t + 1) / tp;
      shard.vocab_begin = 0;
      for (int q = 0; q < t; ++q) shard.vocab_begin += vocab_widths[q];
      shard.vocab_end = shard.vocab_begin + vocab_widths[t];
      CommunicatorHooksOptions o;
      o.tensor_group = tp_groups[s][t].get();
      o.vocab_widths = vocab_widths;
      o.pipeline = pp_groups[t][s].get();
      o.previous_stage = s - 1;
      o.next_stage = s + 1 < pp ? s + 1 : -1;
      hooks[r] = std::make_unique<CommunicatorHooks>(o);
      backends[r] = std::make_unique<CpuBackend>(1);
      auto e = Engine::Create(w, shard, backends[r].get(), hooks[r].get(), SmallKv());
      EXPECT_TRUE(e.ok()) << e.status();
      if (!e.ok()) return {};
      engines[r] = *std::move(e);
    }
  }
  std::vector<std::vector<float>> logits(n);
  std::vector<absl::Status> st(n);
  OnRanks(n, [&](int r) { st[r] = RunSteps(engines[r].get(), &logits[r]); });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
  return std::vector<std::vector<float>>(logits.end() - tp, logits.end());
}

class OverTcp : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(OverTcp, ShardedTinyLlamaReproducesTheWholeModel) {
  const auto [tp, pp] = GetParam();
  auto w = SyntheticWeights::Create(TinyConfig(), GgmlType::kQ8_0, 42);
  ASSERT_TRUE(w.ok()) << w.status();
  CpuBackend backend(1);
  auto whole = Engine::Create(**w, ModelShard::Whole((*w)->config()), &backend, nullptr, SmallKv());
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::vector<float> want;
  ASSERT_TRUE(RunSteps(whole->get(), &want).ok());
  ASSERT_EQ(want.size(), 2u * 96);

  const std::vector<int64_t> widths =
      tp == 1 ? std::vector<int64_t>{96} : std::vector<int64_t>{40, 56};  // uneven
  std::vector<std::vector<float>> got = RunOverTcp(**w, tp, pp, widths);
  ASSERT_EQ(got.size(), static_cast<size_t>(tp));
  for (int t = 0; t < tp; ++t) {
    ASSERT_EQ(got[t].size(), want.size()) << "last-stage TP rank " << t;
    // Partial sums of the row-parallel projections are added in another order than the
    // unsplit dot products: float32 rounding of a few ulps of the logits' scale.
    EXPECT_LT(RelativeError(got[t], want), 1e-5) << "last-stage TP rank " << t;
    // Every rank of the last stage holds the same, gathered logits.
    EXPECT_EQ(got[t], got[0]);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, OverTcp,
                         ::testing::Values(std::make_tuple(2, 2), std::make_tuple(2, 1),
                                           std::make_tuple(1, 2)),
                         [](const auto& info) {
                           return "TP" + std::to_string(std::get<0>(info.param)) + "xPP" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace tessera
