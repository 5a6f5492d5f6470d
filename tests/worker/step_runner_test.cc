// StepRunner: the coordinator's Steps applied to one rank's Engine. The
// reference is model/generate.h Generate() on an engine of its own, which
// prefills, samples and decodes through the plain engine API with one Sampler
// per request: a runner fed the same prompt in Steps must produce the same
// tokens (greedy and seeded sampling, logprobs included), alone, batched with
// other sequences, and with its prompt cut into chunks. The checks a rank makes
// against the coordinator (positions, block tables) must fail with the
// documented errors, and freed sequences must give their KV blocks back. Runs
// on the tiny synthetic llama, and on the real model when TESSERA_TEST_MODEL
// names it.
#include "worker/step_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/kv_cache.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "tests/common/tiny_llama.h"
#include "tests/worker/group_testutil.h"
#include "tests/worker/tiny_model_testutil.h"
#include "worker/shard_hooks.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using testing_util::TinyTokenizer;
using testing_util::TinyWeights;

constexpr int kBlockTokens = 4;

std::unique_ptr<Engine> MakeEngine(const WeightSource &w, Backend *backend, int64_t kv_blocks = 64,
                                   const ModelShard *shard = nullptr, ShardHooks *hooks = nullptr) {
  EngineOptions o;
  o.kv_block_tokens = kBlockTokens;
  o.kv_blocks = kv_blocks;
  auto e = Engine::Create(w, shard ? *shard : ModelShard::Whole(w.config()), backend, hooks, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

v1::SamplingParams Greedy() {
  v1::SamplingParams p;
  p.set_temperature(0.0f);
  return p;
}

v1::SamplingParams Seeded(uint64_t seed) {
  v1::SamplingParams p;
  p.set_temperature(0.9f);
  p.set_top_k(40);
  p.set_top_p(0.95f);
  p.set_repetition_penalty(1.3f);
  p.set_repeat_last_n(-1);
  p.set_presence_penalty(0.5f);
  p.set_seed(seed);
  return p;
}

// The SamplingParams Generate gets for the same wire parameters (converted
// independently of SamplingParamsFromProto: field by field, starting from the
// defaults).
SamplingParams Native(const v1::SamplingParams &p, int logprobs) {
  SamplingParams s;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_repeat_last_n()) s.repeat_last_n = p.repeat_last_n();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_seed()) s.seed = p.seed();
  s.n_logprobs = logprobs;
  s.logprobs = logprobs > 0;
  return s;
}

// What Generate() makes of a request: the reference tokens.
std::vector<SampledToken> Reference(const WeightSource &w, const Tokenizer &tok,
                                    const std::vector<int32_t> &prompt, const v1::SamplingParams &p,
                                    int logprobs, int n_tokens, int64_t prefill_chunk = 512) {
  CpuBackend backend(2);
  auto engine = MakeEngine(w, &backend);
  GenerateRequest req;
  req.prompt = prompt;
  req.sampling = Native(p, logprobs);
  req.max_tokens = n_tokens;
  req.prefill_chunk = prefill_chunk;
  auto r = Generate(*engine, tok, req, 1, nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  EXPECT_EQ(static_cast<int>(r->tokens.size()), n_tokens);
  return r->tokens;
}

// One sequence's part of the coordinator's steps.
struct SeqPlan {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  v1::SamplingParams params;
  uint32_t logprobs = 0;
  int n_tokens = 0;    // tokens to sample
  size_t chunk = 512;  // prompt tokens per step
  int start_step = 0;  // the step at which it joins the batch

  // Progress.
  size_t fed = 0;
  std::vector<v1::Token> out;
};

using RunStep = std::function<absl::StatusOr<v1::StepResult>(const v1::Step &)>;

// Drives the ranks the way a scheduler would: every step, each active sequence
// contributes its next prompt chunk or its last sampled token; the last prompt
// chunk and every decode sample. `run` applies a step to every rank and returns
// the sampling rank's result. Returns the first error.
absl::Status Drive(const RunStep &run, std::vector<SeqPlan> &seqs) {
  for (uint64_t step_id = 1;; ++step_id) {
    v1::Step step;
    step.set_step_id(step_id);
    bool any = false;
    for (SeqPlan &s : seqs) {
      if (static_cast<int>(step_id) <= s.start_step ||
          static_cast<int>(s.out.size()) == s.n_tokens) {
        continue;
      }
      any = true;
      v1::SeqInput *in = step.add_inputs();
      in->set_seq_id(s.id);
      const size_t held = s.fed + (s.out.empty() ? 0 : s.out.size() - 1);
      in->set_position(static_cast<uint32_t>(held));
      if (s.fed < s.prompt.size()) {
        const size_t end = std::min(s.prompt.size(), s.fed + s.chunk);
        for (size_t i = s.fed; i < end; ++i) in->add_tokens(s.prompt[i]);
        if (s.fed == 0) {
          *in->mutable_sampling()->mutable_params() = s.params;
          in->mutable_sampling()->set_logprobs(s.logprobs);
        }
        s.fed = end;
        in->set_sample(end == s.prompt.size());
      } else {
        in->add_tokens(s.out.back().id());
        in->set_sample(true);
      }
    }
    if (!any) return absl::OkStatus();
    absl::StatusOr<v1::StepResult> r = run(step);
    if (!r.ok()) return r.status();
    EXPECT_EQ(r->step_id(), step_id);
    int k = 0;
    for (const v1::SeqInput &in : step.inputs()) {
      if (!in.sample()) continue;
      if (k >= r->sampled_size()) return absl::InternalError("too few sampled tokens");
      const v1::SampledSequence &got = r->sampled(k++);
      EXPECT_EQ(got.seq_id(), in.seq_id());
      for (SeqPlan &s : seqs) {
        if (s.id == in.seq_id()) s.out.push_back(got.token());
      }
    }
    EXPECT_EQ(k, r->sampled_size());
  }
}

absl::Status Drive(StepRunner &runner, std::vector<SeqPlan> &seqs) {
  return Drive([&](const v1::Step &step) { return runner.Run(step); }, seqs);
}

void ExpectSameTokens(const std::vector<v1::Token> &got, const std::vector<SampledToken> &want,
                      bool logprobs, const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].id(), want[i].id) << what << " token " << i;
    if (!logprobs) continue;
    EXPECT_FLOAT_EQ(got[i].logprob(), want[i].logprob) << what << " token " << i;
    ASSERT_EQ(got[i].top_logprobs_size(), static_cast<int>(want[i].top_logprobs.size()));
    for (size_t j = 0; j < want[i].top_logprobs.size(); ++j) {
      EXPECT_EQ(got[i].top_logprobs(j).id(), want[i].top_logprobs[j].id);
      EXPECT_FLOAT_EQ(got[i].top_logprobs(j).logprob(), want[i].top_logprobs[j].logprob);
    }
  }
}

class StepRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = TinyTokenizer();
    ASSERT_NE(tokenizer_, nullptr);
  }
  const SyntheticWeights &w_ = TinyWeights();
  std::unique_ptr<Tokenizer> tokenizer_;
  CpuBackend backend_{2};
};

TEST_F(StepRunnerTest, GreedyTokensEqualGenerate) {
  const std::vector<int32_t> prompt = {3, 17, 42, 8, 91, 5, 60};
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), /*sampler=*/true, "test rank");
  std::vector<SeqPlan> seqs(1);
  seqs[0].id = 11;
  seqs[0].prompt = prompt;
  seqs[0].params = Greedy();
  seqs[0].n_tokens = 20;
  ASSERT_TRUE(Drive(runner, seqs).ok());
  ExpectSameTokens(seqs[0].out, Reference(w_, *tokenizer_, prompt, Greedy(), 0, 20), false,
                   "greedy");
  EXPECT_EQ(runner.n_sequences(), 1);
  EXPECT_EQ(engine->Length(11), static_cast<int64_t>(prompt.size()) + 19);
}

TEST_F(StepRunnerTest, SeededSamplingWithLogprobsEqualsGenerate) {
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2, 2};
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), true, "test rank");
  std::vector<SeqPlan> seqs(1);
  seqs[0].id = 5;
  seqs[0].prompt = prompt;
  seqs[0].params = Seeded(1234);
  seqs[0].logprobs = 3;
  seqs[0].n_tokens = 24;
  ASSERT_TRUE(Drive(runner, seqs).ok());
  ExpectSameTokens(seqs[0].out, Reference(w_, *tokenizer_, prompt, Seeded(1234), 3, 24), true,
                   "seeded");
}

TEST_F(StepRunnerTest, PromptInChunksEqualsOneChunk) {
  // Repetition and presence penalties see the whole prompt only if every chunk
  // reaches the sampler; the reference prefills in one chunk.
  const std::vector<int32_t> prompt = {9, 9, 9, 33, 33, 71, 71, 71, 71, 4, 4};
  for (size_t chunk : {1, 3, 4, 10}) {
    auto engine = MakeEngine(w_, &backend_);
    StepRunner runner(engine.get(), true, "test rank");
    std::vector<SeqPlan> seqs(1);
    seqs[0].id = 2;
    seqs[0].prompt = prompt;
    seqs[0].params = Seeded(77);
    seqs[0].logprobs = 1;
    seqs[0].n_tokens = 16;
    seqs[0].chunk = chunk;
    ASSERT_TRUE(Drive(runner, seqs).ok());
    ExpectSameTokens(seqs[0].out, Reference(w_, *tokenizer_, prompt, Seeded(77), 1, 16), true,
                     "chunk " + std::to_string(chunk));
  }
}

TEST_F(StepRunnerTest, BatchedSequencesEachEqualTheirOwnGenerate) {
  // Three sequences with their own parameters share the steps; the third joins
  // while the others decode (its prefill chunks ride along with their decode
  // tokens).
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), true, "test rank");
  std::vector<SeqPlan> seqs(3);
  seqs[0].id = 100, seqs[0].prompt = {5, 6, 7}, seqs[0].params = Greedy(), seqs[0].n_tokens = 12;
  seqs[1].id = 7, seqs[1].prompt = {40, 41, 42, 43, 44, 45, 46, 47, 48};
  seqs[1].params = Seeded(9), seqs[1].logprobs = 2, seqs[1].n_tokens = 10, seqs[1].chunk = 4;
  seqs[2].id = 3, seqs[2].prompt = {90, 1, 90, 1, 90, 1, 12};
  seqs[2].params = Seeded(10), seqs[2].n_tokens = 9, seqs[2].chunk = 2, seqs[2].start_step = 4;
  ASSERT_TRUE(Drive(runner, seqs).ok());
  for (const SeqPlan &s : seqs) {
    ExpectSameTokens(
        s.out,
        Reference(w_, *tokenizer_, s.prompt, s.params, static_cast<int>(s.logprobs), s.n_tokens),
        s.logprobs > 0, "sequence " + std::to_string(s.id));
  }
  EXPECT_EQ(runner.n_sequences(), 3);
}

TEST_F(StepRunnerTest, OnlyTheSamplingRankSamples) {
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), /*sampler=*/false, "test rank");
  v1::Step step;
  step.set_step_id(1);
  v1::SeqInput *in = step.add_inputs();
  in->set_seq_id(1);
  in->add_tokens(3);
  in->add_tokens(4);
  in->set_sample(true);
  // Nonsense sampling parameters are not this rank's business.
  in->mutable_sampling()->mutable_params()->set_temperature(-5.0f);
  auto r = runner.Run(step);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sampled_size(), 0);
  EXPECT_EQ(engine->Length(1), 2);
}

TEST_F(StepRunnerTest, BadSamplingParametersAreInvalidArgument) {
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), true, "worker w1 (replica 0, rank 0)");
  v1::Step step;
  step.set_step_id(4);
  v1::SeqInput *in = step.add_inputs();
  in->set_seq_id(1);
  in->add_tokens(3);
  in->set_sample(true);
  in->mutable_sampling()->mutable_params()->set_temperature(-1.0f);
  auto r = runner.Run(step);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("worker w1 (replica 0, rank 0), step 4"));
  EXPECT_THAT(r.status().message(), HasSubstr("temperature"));
  EXPECT_EQ(runner.n_sequences(), 0);
  EXPECT_EQ(engine->Length(1), 0);

  in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
  in->mutable_sampling()->set_logprobs(SamplingParams::kMaxLogprobs + 1);
  r = runner.Run(step);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("logprobs"));
}

TEST_F(StepRunnerTest, PositionMismatchIsFailedPrecondition) {
  auto engine = MakeEngine(w_, &backend_);
  StepRunner runner(engine.get(), true, "worker w2 (replica 1, rank 3)");
  v1::Step step;
  step.set_step_id(1);
  v1::SeqInput *in = step.add_inputs();
  in->set_seq_id(8);
  for (int t : {1, 2, 3, 4, 5}) in->add_tokens(t);
  in->set_sample(true);
  in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
  ASSERT_TRUE(runner.Run(step).ok());

  v1::Step next;
  next.set_step_id(2);
  v1::SeqInput *d = next.add_inputs();
  d->set_seq_id(8);
  d->set_position(3);  // the sequence holds 5
  d->add_tokens(6);
  d->set_sample(true);
  auto r = runner.Run(next);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("worker w2 (replica 1, rank 3), step 2"));
  EXPECT_THAT(r.status().message(), HasSubstr("sequence 8 is at position 3 for the coordinator but "
                                              "holds 5 tokens"));
  EXPECT_EQ(engine->Length(8), 5);  // nothing ran

  // A sequence this rank never saw, at a position past 0.
  d->set_seq_id(9);
  d->set_position(5);
  r = runner.Run(next);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("sequence 9 is at position 5"));
}

TEST_F(StepRunnerTest, BlockTablesAreCheckedAgainstTheCoordinatorsMirror) {
  // The coordinator keeps its own KvBlockManager with the same block count and
  // applies the same reservations; its tables are accepted, any other is an
  // INTERNAL error naming both.
  auto engine = MakeEngine(w_, &backend_, /*kv_blocks=*/16);
  KvBlockManager mirror(16, kBlockTokens);
  StepRunner runner(engine.get(), true, "test rank");
  v1::Step step;
  step.set_step_id(1);
  for (uint64_t id : {1, 2}) {
    v1::SeqInput *in = step.add_inputs();
    in->set_seq_id(id);
    for (int t = 0; t < 6 + static_cast<int>(id); ++t) in->add_tokens(t);
    in->set_sample(true);
    in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
    ASSERT_TRUE(mirror.Reserve(id, in->tokens_size()).ok());
    for (int32_t b : mirror.BlockTable(id)) in->add_block_table(b);
  }
  auto r = runner.Run(step);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->sampled_size(), 2);

  v1::Step next;
  next.set_step_id(2);
  v1::SeqInput *in = next.add_inputs();
  in->set_seq_id(2);
  in->set_position(8);
  in->add_tokens(r->sampled(1).token().id());
  in->set_sample(true);
  ASSERT_TRUE(mirror.Reserve(2, 9).ok());  // a third block
  const std::vector<int32_t> expected = mirror.BlockTable(2);
  ASSERT_EQ(expected.size(), 3u);
  // A desynchronised coordinator: the last two blocks swapped.
  in->add_block_table(expected[0]);
  in->add_block_table(expected[2]);
  in->add_block_table(expected[1]);
  auto bad = runner.Run(next);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(bad.status().message(),
              HasSubstr(absl::StrCat("sequence 2: KV block table [", expected[0], ",", expected[1],
                                     ",", expected[2], "] differs from the coordinator's [",
                                     expected[0], ",", expected[2], ",", expected[1], "]")));
}

TEST_F(StepRunnerTest, FreedSequencesReturnTheirBlocks) {
  // 5 blocks of 4 tokens: two 10-token prompts (3 blocks each) do not fit
  // together.
  auto engine = MakeEngine(w_, &backend_, /*kv_blocks=*/5);
  StepRunner runner(engine.get(), true, "test rank");
  const std::vector<int32_t> prompt = {8, 6, 4, 2, 0, 1, 3, 5, 7, 9};
  auto first_step = [&](uint64_t step_id, uint64_t seq, std::vector<uint64_t> frees) {
    v1::Step step;
    step.set_step_id(step_id);
    for (uint64_t f : frees) step.add_free_seq_ids(f);
    v1::SeqInput *in = step.add_inputs();
    in->set_seq_id(seq);
    for (int32_t t : prompt) in->add_tokens(t);
    in->set_sample(true);
    in->mutable_sampling()->mutable_params()->set_temperature(0.0f);
    return runner.Run(step);
  };
  auto a = first_step(1, 1, {});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(engine->kv().free_blocks(), 2);
  auto full = first_step(2, 2, {});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(runner.n_sequences(), 1);  // the failed new sequence is forgotten

  auto b = first_step(3, 2, {1});  // frees sequence 1 before the batch runs
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(runner.n_sequences(), 1);
  EXPECT_EQ(engine->Length(1), 0);
  EXPECT_EQ(engine->kv().free_blocks(), 2);
  // Both saw the same prompt from an empty cache: the same first token.
  EXPECT_EQ(b->sampled(0).token().id(), a->sampled(0).token().id());

  // A freed id starts over at position 0 with a fresh sampler.
  auto again = first_step(4, 1, {2, 12345});  // unknown ids are ignored
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->sampled(0).token().id(), a->sampled(0).token().id());
  EXPECT_EQ(engine->kv().free_blocks(), 2);
  EXPECT_EQ(runner.n_sequences(), 1);
}

// Whole-model logits after each of `tokens` (teacher forcing), from one
// unsharded engine.
std::vector<std::vector<float>> WholeModelLogits(const WeightSource &w,
                                                 const std::vector<int32_t> &tokens) {
  CpuBackend backend(1);
  auto engine = MakeEngine(w, &backend);
  std::vector<std::vector<float>> rows;
  std::vector<float> logits;
  for (int32_t t : tokens) {
    EXPECT_TRUE(engine->Step({{1, {t}, true}}, &logits).ok());
    rows.push_back(logits);
  }
  return rows;
}

// Regression: the non-sampling rank of the last stage's tensor group asked the
// engine for no logits and so skipped the vocab-parallel gather its sampling
// peer waited in (until the communicator timeout). Both ranks get every step,
// as from the coordinator; the sampled tokens must be the whole model's greedy
// choice under teacher forcing (a tensor-parallel split sums in another order,
// so a token may differ from the unsharded argmax only by a near-tie).
TEST_F(StepRunnerTest, BothTensorRanksOfTheLastStageJoinTheLogitsGather) {
  const ModelConfig &c = w_.config();
  ModelShard shards[2];
  for (int r = 0; r < 2; ++r) {
    shards[r] = ModelShard::Whole(c);
    shards[r].kv_head_begin = r, shards[r].kv_head_end = r + 1;
    shards[r].ff_begin = r * c.n_ff / 2, shards[r].ff_end = (r + 1) * c.n_ff / 2;
    shards[r].vocab_begin = r * c.n_vocab / 2, shards[r].vocab_end = (r + 1) * c.n_vocab / 2;
  }
  auto comms = FormGroup(2, "step-runner-tp", absl::Seconds(20));
  ASSERT_EQ(comms.size(), 2u);
  std::vector<std::unique_ptr<CpuBackend>> backends;
  std::vector<std::unique_ptr<CommunicatorHooks>> hooks;
  std::vector<std::unique_ptr<Engine>> engines;
  std::vector<std::unique_ptr<StepRunner>> runners;
  for (int r = 0; r < 2; ++r) {
    backends.push_back(std::make_unique<CpuBackend>(1));
    CommunicatorHooksOptions ho;
    ho.tensor_group = comms[r].get();
    ho.vocab_widths = {c.n_vocab / 2, c.n_vocab / 2};
    hooks.push_back(std::make_unique<CommunicatorHooks>(ho));
    engines.push_back(MakeEngine(w_, backends[r].get(), 64, &shards[r], hooks[r].get()));
    ASSERT_NE(engines[r], nullptr);
    runners.push_back(std::make_unique<StepRunner>(engines[r].get(), r == 0, "tp rank"));
  }
  auto run = [&](const v1::Step &step) -> absl::StatusOr<v1::StepResult> {
    absl::StatusOr<v1::StepResult> results[2];
    OnRanks(2, [&](int r) { results[r] = runners[r]->Run(step); });
    if (!results[1].ok()) return results[1].status();
    if (results[0].ok()) {
      EXPECT_EQ(results[1]->sampled_size(), 0);
    }
    return results[0];
  };
  std::vector<SeqPlan> seqs(2);
  seqs[0].id = 1, seqs[0].prompt = {3, 1, 4, 1, 5}, seqs[0].n_tokens = 8;
  seqs[1].id = 2, seqs[1].prompt = {2, 7, 1, 8}, seqs[1].n_tokens = 6, seqs[1].start_step = 2;
  for (SeqPlan &s : seqs) s.params = Greedy();
  absl::Status s = Drive(run, seqs);
  ASSERT_TRUE(s.ok()) << s;
  for (const SeqPlan &q : seqs) {
    std::vector<int32_t> forced = q.prompt;
    for (size_t i = 0; i + 1 < q.out.size(); ++i) forced.push_back(q.out[i].id());
    const auto rows = WholeModelLogits(w_, forced);
    for (size_t i = 0; i < q.out.size(); ++i) {
      const std::vector<float> &row = rows[q.prompt.size() - 1 + i];
      const float best = *std::max_element(row.begin(), row.end());
      // Float32 sums of ~100 terms in another order differ by ~1e-6 relative.
      EXPECT_LE(best - row[q.out[i].id()], 1e-4f * std::max(1.0f, std::abs(best)))
          << "sequence " << q.id << " token " << i;
    }
  }
}

// The real model, when present: greedy and seeded sampling through Steps equal
// Generate.
TEST(StepRunnerRealModel, TokensEqualGenerate) {
  const char *path = std::getenv("TESSERA_TEST_MODEL");
  if (path == nullptr || !std::ifstream(path).good()) {
    GTEST_SKIP() << "TESSERA_TEST_MODEL does not name the real model";
  }
  auto model = OpenGgufModel(path);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = Tokenizer::FromGguf(*model->file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto prompt = (*tokenizer)->Encode("The three primary colors are", true, false);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  const WeightSource &w = *model->weights;
  for (const v1::SamplingParams &p : {Greedy(), Seeded(42)}) {
    CpuBackend backend(2);
    auto engine = MakeEngine(w, &backend, 64);
    StepRunner runner(engine.get(), true, "real rank");
    std::vector<SeqPlan> seqs(1);
    seqs[0].id = 1, seqs[0].prompt = *prompt, seqs[0].params = p, seqs[0].n_tokens = 10;
    seqs[0].chunk = 3;
    ASSERT_TRUE(Drive(runner, seqs).ok());
    ExpectSameTokens(seqs[0].out, Reference(w, **tokenizer, *prompt, p, 0, 10, /*chunk=*/3), false,
                     p.temperature() == 0 ? "greedy" : "seeded");
  }
}

}  // namespace
}  // namespace tessera
