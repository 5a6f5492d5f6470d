// The planner: golden plans for real shapes (no weights), refusals with their reasons, and
// invariants over random configs: the shards of a plan partition every range exactly, every
// cut is block-aligned, and the per-rank bytes add up to the whole model plus what is
// replicated, computed here independently from element counts and block sizes.
#include "sharding/planner.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/presets.h"
#include "sharding/recipes.h"

namespace tessera {
namespace {

using T = GgmlType;
using ::testing::HasSubstr;

constexpr int64_t kGiB = int64_t{1} << 30;

// Block geometry by type (independent of kernels/quant): {elements, bytes}.
std::pair<int64_t, int64_t> Block(T t) {
  static const std::map<T, std::pair<int64_t, int64_t>> kBlocks = {
      {T::kF32, {1, 4}},      {T::kF16, {1, 2}},      {T::kQ4_0, {32, 18}},
      {T::kQ4_1, {32, 20}},   {T::kQ5_0, {32, 22}},   {T::kQ5_1, {32, 24}},
      {T::kQ8_0, {32, 34}},   {T::kQ2_K, {256, 84}},  {T::kQ3_K, {256, 110}},
      {T::kQ4_K, {256, 144}}, {T::kQ5_K, {256, 176}}, {T::kQ6_K, {256, 210}}};
  return kBlocks.at(t);
}
int64_t Bytes(T t, int64_t rows, int64_t cols) {
  const auto [elems, bytes] = Block(t);
  return rows * (cols / elems) * bytes;
}

ModelConfig Preset(const char* name) {
  absl::StatusOr<ModelConfig> c = PresetConfig(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

PlanOptions Options(int64_t context, int64_t batch, int64_t reserve) {
  PlanOptions o;
  o.context_tokens = context;
  o.batch = batch;
  o.kv_elem_bytes = 2;
  o.reserve_bytes = reserve;
  return o;
}

ClusterSpec Gpus(int64_t n, int64_t memory) {
  ClusterSpec c;
  c.n_gpus = n;
  c.gpu_memory_bytes = memory;
  return c;
}

TEST(Planner, Llama3_8B_Q4_K_M_FitsOneGpuOf24GiB) {
  const ModelConfig c = Preset("llama3-8b");
  const WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ4_K_M);
  absl::StatusOr<Plan> p = MakePlan(c, w, Gpus(1, 24 * kGiB), Options(8192, 1, kGiB));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->tp, 1);
  EXPECT_EQ(p->pp, 1);
  ASSERT_EQ(p->ranks.size(), 1u);
  const RankPlan& r = p->ranks[0];
  EXPECT_EQ(r.weight_bytes, TotalWeightBytes(c, w)->bytes);
  // K and V x 32 layers x 8 KV heads x 128 x 8192 tokens x 2 bytes = 1 GiB.
  EXPECT_EQ(r.kv_bytes, 2LL * 32 * 8 * 128 * 8192 * 2);
  EXPECT_EQ(r.kv_bytes, kGiB);
  EXPECT_EQ(r.shard.layer_end, 32);
  EXPECT_EQ(r.shard.vocab_end, 128256);
}

TEST(Planner, Llama3_70B_Q4_K_M_With8kContextBatch32NeedsTwo80GiBGpus) {
  const ModelConfig c = Preset("llama3-70b");
  const WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ4_K_M);
  const PlanOptions o = Options(8192, 32, kGiB);
  // KV: 2 x 80 layers x 8 heads x 128 x 8192 x 32 x 2 bytes = 80 GiB: alone it fills a GPU.
  EXPECT_EQ(KvCacheBytes(c, o), 80 * kGiB);
  absl::StatusOr<Plan> p = MakePlan(c, w, Gpus(8, 80 * kGiB), o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->tp, 2);
  EXPECT_EQ(p->pp, 1);
  for (const RankPlan& r : p->ranks) {
    EXPECT_EQ(r.kv_bytes, 40 * kGiB);
    EXPECT_EQ(r.n_kv_heads, 4);
    EXPECT_EQ(r.n_heads, 32);
    EXPECT_LE(r.total_bytes(), 80 * kGiB);
  }
  // One GPU is refused with the shortfall.
  PlanOptions one = o;
  one.tp = one.pp = 1;
  absl::StatusOr<Plan> refused = MakePlan(c, w, Gpus(8, 80 * kGiB), one);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("short by"));
}

TEST(Planner, Llama3_405B_Q4_K_M_On8x80GiB) {
  const ModelConfig c = Preset("llama3-405b");
  const WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ4_K_M);
  const PlanOptions o = Options(8192, 1, kGiB);
  absl::StatusOr<Plan> p = MakePlan(c, w, Gpus(8, 80 * kGiB), o);
  ASSERT_TRUE(p.ok()) << p.status();
  // ~243 GB of weights: no 2-GPU layout fits, a 3-GPU one does.
  EXPECT_EQ(p->gpus(), 3);
  for (auto [tp, pp] : {std::pair{2, 1}, std::pair{1, 2}}) {
    absl::StatusOr<Plan> two = LayoutPlan(c, w, tp, pp, o);
    ASSERT_TRUE(two.ok()) << two.status();
    EXPECT_FALSE(CheckFits(*two, 80 * kGiB).ok()) << tp << "x" << pp;
  }
  // The whole node as TP=8: each rank holds 1 KV head, 16 query heads, 1/8 of the FFN and the
  // vocab, and the whole embedding table.
  PlanOptions tp8 = o;
  tp8.tp = 8;
  tp8.pp = 1;
  absl::StatusOr<Plan> full = MakePlan(c, w, Gpus(8, 80 * kGiB), tp8);
  ASSERT_TRUE(full.ok()) << full.status();
  const int64_t embd = Bytes(w.token_embd, c.n_vocab, c.n_embd);
  EXPECT_EQ(full->sum_weight_bytes(),
            TotalWeightBytes(c, w)->bytes + 7 * embd + 7 * (2 * 126 + 1) * c.n_embd * 4);
  for (const RankPlan& r : full->ranks) {
    EXPECT_EQ(r.n_kv_heads, 1);
    EXPECT_EQ(r.n_heads, 16);
    EXPECT_EQ(r.shard.ff_end - r.shard.ff_begin, 53248 / 8);
    EXPECT_EQ(r.shard.vocab_end - r.shard.vocab_begin, 128256 / 8);
  }
}

TEST(Planner, SmolLM2OnTp2SplitsThreeKvHeadsTwoAndOne) {
  const ModelConfig c = Preset("smollm2-135m");
  // The real file's mix: Q4_1 matrices, Q8_0 tied embedding.
  WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ4_0);
  for (LayerWeightTypes& l : w.layers) {
    l.attn_q = l.attn_k = l.attn_v = l.attn_output = l.ffn_gate = l.ffn_up = l.ffn_down = T::kQ4_1;
  }
  absl::StatusOr<Plan> p = LayoutPlan(c, w, 2, 1, Options(2048, 1, 0));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->ranks.size(), 2u);
  const ModelShard& a = p->ranks[0].shard;
  const ModelShard& b = p->ranks[1].shard;
  EXPECT_EQ(a.kv_head_begin, 0);
  EXPECT_EQ(a.kv_head_end, 2);
  EXPECT_EQ(b.kv_head_begin, 2);
  EXPECT_EQ(b.kv_head_end, 3);
  EXPECT_EQ(p->ranks[0].n_heads, 6);
  EXPECT_EQ(p->ranks[1].n_heads, 3);
  EXPECT_EQ(a.ff_begin, 0);
  EXPECT_EQ(a.ff_end, b.ff_begin);
  EXPECT_EQ(b.ff_end, 1536);
  EXPECT_EQ(a.ff_end % 32, 0);
  EXPECT_EQ(a.ff_end, 768);
  // attn_output columns of rank 1 start at 6 heads x 64 = 384: whole Q4_1 blocks.
  EXPECT_EQ(b.kv_head_begin * c.n_gqa() * c.head_dim % 32, 0);
  // KV bytes follow the heads: 2 : 1.
  EXPECT_EQ(p->ranks[0].kv_bytes, 2 * p->ranks[1].kv_bytes);
}

// A SmolLM2-like shape whose rows are whole 256-blocks (n_embd 768 = 12 heads x 64, 4 KV heads),
// so that a k-quant attn_output exists: one KV group's query heads span 3 x 64 = 192 columns.
ModelConfig Gqa3Head64() {
  ModelConfig c = Preset("smollm2-135m");
  c.n_embd = 768;
  c.n_heads = 12;
  c.n_kv_heads = 4;
  c.head_dim = c.n_rot = 64;
  return c;
}

TEST(Planner, RefusesHeadSlicesThatAreNotWholeKQuantBlocks) {
  const ModelConfig c = Gqa3Head64();
  const WeightTypes q4k = RecipeWeightTypes(c, QuantRecipe::kQ4_K_M);
  ASSERT_EQ(q4k.layers[3].attn_output, T::kQ4_K);
  for (int64_t tp : {2, 3, 4}) {
    absl::StatusOr<Plan> p = LayoutPlan(c, q4k, tp, 1, Options(1024, 1, 0));
    ASSERT_FALSE(p.ok()) << "TP=" << tp;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string m(p.status().message());
    EXPECT_THAT(m, HasSubstr("attn_output"));
    EXPECT_THAT(m, HasSubstr("192 columns"));
    EXPECT_THAT(m, HasSubstr("256-element blocks"));
  }
  // With 32-element blocks every head boundary is a block boundary: TP=3 works (2+1+1 heads).
  const WeightTypes q4_0 = RecipeWeightTypes(c, QuantRecipe::kQ4_0);
  absl::StatusOr<Plan> p = LayoutPlan(c, q4_0, 3, 1, Options(1024, 1, 0));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ranks[0].n_kv_heads, 2);
  EXPECT_EQ(p->ranks[2].n_kv_heads, 1);
}

TEST(Planner, RefusesTooManyRanksWithTheReason) {
  const ModelConfig c = Preset("smollm2-135m");
  const WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ8_0);
  absl::StatusOr<Plan> tp4 = LayoutPlan(c, w, 4, 1, Options(1024, 1, 0));
  ASSERT_FALSE(tp4.ok());
  EXPECT_THAT(std::string(tp4.status().message()),
              HasSubstr("TP=4 exceeds the model's 3 KV heads"));
  absl::StatusOr<Plan> pp31 = LayoutPlan(c, w, 1, 31, Options(1024, 1, 0));
  ASSERT_FALSE(pp31.ok());
  EXPECT_THAT(std::string(pp31.status().message()),
              HasSubstr("PP=31 exceeds the model's 30 layers"));
  // A layout larger than the cluster.
  PlanOptions o = Options(1024, 1, 0);
  o.tp = 3;
  o.pp = 2;
  absl::StatusOr<Plan> big = MakePlan(c, w, Gpus(4, kGiB), o);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("needs 6 GPUs but the cluster has 4"));
}

TEST(Planner, AutoSaysHowManyGpusWouldFit) {
  const ModelConfig c = Preset("llama3-70b");
  const WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ4_K_M);
  absl::StatusOr<Plan> p = MakePlan(c, w, Gpus(1, 24 * kGiB), Options(8192, 1, kGiB));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the smallest layout that fits is TP"));
}

// The pipeline balance is optimal: compare with every split of a small model into 3 stages.
TEST(Planner, PipelineStagesMinimizeTheLargestStage) {
  ModelConfig c = Preset("smollm2-135m");
  c.n_layers = 9;
  WeightTypes w = RecipeWeightTypes(c, QuantRecipe::kQ8_0);
  w.layers[2].ffn_down = w.layers[2].ffn_gate = w.layers[2].ffn_up = T::kF16;  // a heavy layer
  const PlanOptions o = Options(512, 1, 0);
  absl::StatusOr<Plan> p = LayoutPlan(c, w, 1, 3, o);
  ASSERT_TRUE(p.ok()) << p.status();
  int64_t best = INT64_MAX;
  for (int64_t a = 1; a < 9; ++a) {
    for (int64_t b = a + 1; b < 9; ++b) {
      int64_t worst = 0;
      for (auto [lo, hi] : {std::pair{int64_t{0}, a}, std::pair{a, b}, std::pair{b, int64_t{9}}}) {
        int64_t bytes = 0;
        for (int64_t l = lo; l < hi; ++l) {
          const LayerWeightTypes& t = w.layers[l];
          const int64_t e = c.n_embd;
          bytes += Bytes(t.attn_norm, 1, e) + Bytes(t.ffn_norm, 1, e) +
                   Bytes(t.attn_q, c.q_dim(), e) + Bytes(t.attn_k, c.kv_dim(), e) +
                   Bytes(t.attn_v, c.kv_dim(), e) + Bytes(t.attn_output, e, c.q_dim()) +
                   Bytes(t.ffn_gate, c.n_ff, e) + Bytes(t.ffn_up, c.n_ff, e) +
                   Bytes(t.ffn_down, e, c.n_ff) + 2 * c.kv_dim() * 512 * 2;
        }
        if (lo == 0) bytes += Bytes(w.token_embd, c.n_vocab, c.n_embd);
        if (hi == 9) bytes += Bytes(w.output, c.n_vocab, c.n_embd) + Bytes(T::kF32, 1, c.n_embd);
        worst = std::max(worst, bytes);
      }
      best = std::min(best, worst);
    }
  }
  EXPECT_EQ(p->max_rank_bytes(), best);
}

// Random shapes and type mixes: a plan partitions everything exactly, cuts on block boundaries,
// and its bytes add up to the model plus replication; a refusal is justified.
TEST(Planner, RandomConfigsPartitionExactlyAndAddUp) {
  std::mt19937 rng(20240611);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const T k32[] = {T::kQ4_0, T::kQ4_1, T::kQ5_0, T::kQ5_1, T::kQ8_0, T::kF16};
  const T k256[] = {T::kQ2_K, T::kQ3_K, T::kQ4_K, T::kQ5_K, T::kQ6_K};
  // A type whose blocks divide `cols`.
  auto type_for = [&](int64_t cols) {
    if (cols % 256 == 0 && pick(0, 1)) return k256[pick(0, 4)];
    return k32[pick(0, 5)];
  };
  int planned = 0, refused = 0;
  for (int iter = 0; iter < 300; ++iter) {
    ModelConfig c;
    c.architecture = "llama";
    c.n_kv_heads = pick(1, 8);
    c.n_heads = c.n_kv_heads * pick(1, 4);
    c.head_dim = c.n_rot = 32 * pick(1, 4);
    c.n_embd = c.n_heads * c.head_dim;
    c.n_ff = 32 * pick(1, 64);
    c.n_layers = pick(1, 12);
    c.n_vocab = pick(50, 3000);
    c.n_ctx = 4096;
    c.tied_output = pick(0, 1);
    WeightTypes w;
    w.source = "random";
    w.token_embd = type_for(c.n_embd);
    w.output = c.tied_output ? w.token_embd : type_for(c.n_embd);
    w.output_norm = T::kF32;
    w.has_rope_freqs = pick(0, 1);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      LayerWeightTypes t;
      t.attn_q = type_for(c.n_embd);
      t.attn_k = type_for(c.n_embd);
      t.attn_v = type_for(c.n_embd);
      t.ffn_gate = type_for(c.n_embd);
      t.ffn_up = type_for(c.n_embd);
      t.attn_output = type_for(c.q_dim());
      t.ffn_down = type_for(c.n_ff);
      w.layers.push_back(t);
    }
    const int64_t tp = pick(1, 8), pp = pick(1, std::min<int64_t>(c.n_layers, 4));
    const PlanOptions o = Options(pick(1, 300), pick(1, 3), 0);
    absl::StatusOr<Plan> p = LayoutPlan(c, w, tp, pp, o);

    // Independent feasibility: the finest cuts are every `u` KV heads and every `f` FFN rows.
    int64_t o_block = 1, f = 1;
    for (const LayerWeightTypes& t : w.layers) {
      o_block = std::max(o_block, Block(t.attn_output).first);  // 1, 32, 256 nest
      f = std::max(f, Block(t.ffn_down).first);
    }
    int64_t u = 1;
    while (u * c.n_gqa() * c.head_dim % o_block != 0) ++u;
    const bool feasible =
        tp <= c.n_kv_heads && tp <= (c.n_kv_heads + u - 1) / u && tp <= c.n_ff / f;
    ASSERT_EQ(p.ok(), feasible) << "iter " << iter << " tp " << tp << " kv " << c.n_kv_heads
                                << " u " << u << ": " << p.status();
    if (!p.ok()) {
      EXPECT_THAT(std::string(p.status().message()), HasSubstr("TP="));
      ++refused;
      continue;
    }
    ++planned;
    ASSERT_EQ(static_cast<int64_t>(p->ranks.size()), tp * pp);
    int64_t layer_at = 0;
    for (int64_t s = 0; s < pp; ++s) {
      int64_t kv_at = 0, ff_at = 0, vocab_at = 0;
      const ModelShard& first = p->ranks[s * tp].shard;
      EXPECT_EQ(first.layer_begin, layer_at);
      layer_at = first.layer_end;
      for (int64_t r = 0; r < tp; ++r) {
        const RankPlan& rank = p->ranks[s * tp + r];
        const ModelShard& sh = rank.shard;
        EXPECT_TRUE(sh.Validate(c).ok()) << sh.Validate(c);
        EXPECT_EQ(rank.rank, s * tp + r);
        EXPECT_EQ(sh.layer_begin, first.layer_begin);
        EXPECT_EQ(sh.layer_end, first.layer_end);
        EXPECT_EQ(sh.kv_head_begin, kv_at);
        EXPECT_EQ(sh.ff_begin, ff_at);
        EXPECT_EQ(sh.vocab_begin, vocab_at);
        kv_at = sh.kv_head_end;
        ff_at = sh.ff_end;
        vocab_at = sh.vocab_end;
        EXPECT_EQ(sh.kv_head_begin * c.n_gqa() * c.head_dim % o_block, 0);
        EXPECT_EQ(sh.ff_begin % f, 0);
        EXPECT_EQ(rank.n_heads, rank.n_kv_heads * c.n_gqa());
      }
      EXPECT_EQ(kv_at, c.n_kv_heads);
      EXPECT_EQ(ff_at, c.n_ff);
      EXPECT_EQ(vocab_at, c.n_vocab);
    }
    EXPECT_EQ(layer_at, c.n_layers);

    // Bytes: the model once, plus the embedding on every TP rank of stage 0 beyond the first,
    // norms on every TP rank beyond the first, rope_freqs on every rank beyond the first, and
    // for a tied output the output slices (a second copy of the embedding, in slices).
    const int64_t e = c.n_embd;
    int64_t model = Bytes(w.token_embd, c.n_vocab, e) + Bytes(T::kF32, 1, e) +
                    (c.tied_output ? 0 : Bytes(w.output, c.n_vocab, e)) +
                    (w.has_rope_freqs ? Bytes(T::kF32, 1, c.n_rot / 2) : 0);
    for (const LayerWeightTypes& t : w.layers) {
      model += 2 * Bytes(T::kF32, 1, e) + Bytes(t.attn_q, c.q_dim(), e) +
               Bytes(t.attn_k, c.kv_dim(), e) + Bytes(t.attn_v, c.kv_dim(), e) +
               Bytes(t.attn_output, e, c.q_dim()) + Bytes(t.ffn_gate, c.n_ff, e) +
               Bytes(t.ffn_up, c.n_ff, e) + Bytes(t.ffn_down, e, c.n_ff);
    }
    const int64_t norms = (2 * c.n_layers + 1) * Bytes(T::kF32, 1, e);
    const int64_t replicated =
        (tp - 1) * (Bytes(w.token_embd, c.n_vocab, e) + norms) +
        (w.has_rope_freqs ? (tp * pp - 1) * Bytes(T::kF32, 1, c.n_rot / 2) : 0) +
        (c.tied_output ? Bytes(w.token_embd, c.n_vocab, e) : 0);
    EXPECT_EQ(TotalWeightBytes(c, w)->bytes, model);
    EXPECT_EQ(p->sum_weight_bytes(), model + replicated) << "iter " << iter;
    EXPECT_EQ(p->sum_kv_bytes(),
              2 * c.n_layers * c.kv_dim() * o.context_tokens * o.batch * o.kv_elem_bytes);
  }
  EXPECT_GT(planned, 100);
  EXPECT_GT(refused, 10);
}

}  // namespace
}  // namespace tessera
