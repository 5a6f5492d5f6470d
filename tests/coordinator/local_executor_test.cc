// LocalExecutor: steps applied to an in-process engine, checked against the engine driven
// directly (greedy argmax taken by the test); failures end the epoch and the next epoch starts
// with a fresh, empty KV cache.
#include "coordinator/local_executor.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/common/tiny_llama.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

class LocalExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = SyntheticWeights::Create(testing_util::TinyLlamaConfig(), GgmlType::kQ4_0, 3);
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = *std::move(w);
    LocalExecutorOptions o;
    o.kv_blocks = 10;
    o.kv_block_tokens = 4;
    auto e = LocalExecutor::Create(weights_.get(), &backend_, o);
    ASSERT_TRUE(e.ok()) << e.status();
    executor_ = *std::move(e);
  }

  // The greedy token after `prompt`, from an engine driven directly.
  int32_t DirectArgmax(const std::vector<int32_t>& prompt) {
    EngineOptions eo;
    eo.kv_blocks = 10;
    eo.kv_block_tokens = 4;
    auto e = Engine::Create(*weights_, ModelShard::Whole(weights_->config()), &backend_, nullptr,
                            eo);
    EXPECT_TRUE(e.ok()) << e.status();
    std::vector<float> logits;
    EXPECT_TRUE((*e)->Step({{1, prompt, true}}, &logits).ok());
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

  static v1::Step PrefillStep(uint64_t step_id, uint64_t seq, const std::vector<int32_t>& prompt,
                              std::vector<int32_t> table) {
    v1::Step step;
    step.set_step_id(step_id);
    v1::SeqInput* in = step.add_inputs();
    in->set_seq_id(seq);
    in->set_position(0);
    in->mutable_tokens()->Add(prompt.begin(), prompt.end());
    in->set_sample(true);
    in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
    in->mutable_block_table()->Add(table.begin(), table.end());
    return step;
  }

  CpuBackend backend_{1};
  std::unique_ptr<SyntheticWeights> weights_;
  std::unique_ptr<LocalExecutor> executor_;
};

TEST_F(LocalExecutorTest, ReadyInEpochOneAndRunsSteps) {
  const ExecutorState s = executor_->state();
  EXPECT_TRUE(s.ready);
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_EQ(s.kv_blocks, 10);
  EXPECT_EQ(s.kv_block_tokens, 4);
  const std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42};
  auto r = executor_->Execute(PrefillStep(1, 7, prompt, {0, 1}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->sampled_size(), 1);
  EXPECT_EQ(r->sampled(0).seq_id(), 7u);
  EXPECT_EQ(r->sampled(0).token().id(), DirectArgmax(prompt));
  EXPECT_EQ(executor_->engine_used_blocks(), 2);

  // The free list is applied before the inputs: the freed blocks are handed out again, the
  // lowest first.
  v1::Step free_and_run = PrefillStep(2, 8, {1, 2, 3}, {0});
  free_and_run.add_free_seq_ids(7);
  r = executor_->Execute(free_and_run);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(executor_->engine_used_blocks(), 1);
  EXPECT_EQ(executor_->steps(), 2);
}

TEST_F(LocalExecutorTest, InjectedFailureEndsTheEpochWithAFreshEngine) {
  ASSERT_TRUE(executor_->Execute(PrefillStep(1, 1, {5, 6, 7, 8, 9}, {0, 1})).ok());
  executor_->FailNextStep("unplugged", absl::Milliseconds(30));
  auto r = executor_->Execute(PrefillStep(2, 2, {1}, {2}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("unplugged"));
  const ExecutorState down = executor_->state();
  EXPECT_FALSE(down.ready);
  EXPECT_THAT(down.description, HasSubstr("unplugged"));
  const ExecutorState up = executor_->WaitReady(absl::Seconds(30));
  ASSERT_TRUE(up.ready);
  EXPECT_EQ(up.epoch, 2u);
  // Sequence 1 is gone and block ids are handed out from 0 again.
  const std::vector<int32_t> prompt = {5, 6, 7};
  r = executor_->Execute(PrefillStep(1, 1, prompt, {0}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sampled(0).token().id(), DirectArgmax(prompt));
  EXPECT_EQ(executor_->engine_used_blocks(), 1);
}

TEST_F(LocalExecutorTest, AStepTheEngineRefusesEndsTheEpoch) {
  // The coordinator expects block 3 where the engine hands out block 0: a desynchronised
  // mirror must fail the step, not attend to the wrong blocks.
  auto r = executor_->Execute(PrefillStep(1, 1, {1, 2}, {3}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("differs from the coordinator's"));
  const ExecutorState s = executor_->state();  // no down time: ready again, a new epoch
  EXPECT_TRUE(s.ready);
  EXPECT_EQ(s.epoch, 2u);
  r = executor_->Execute(PrefillStep(1, 1, {1, 2}, {0}));
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(LocalExecutorTest, BadOptionsAreRefused) {
  LocalExecutorOptions o;
  o.kv_block_tokens = 0;
  auto e = LocalExecutor::Create(weights_.get(), &backend_, o);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
