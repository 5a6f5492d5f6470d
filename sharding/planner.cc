#include "sharding/planner.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "sharding/byte_size.h"

namespace tessera {
namespace {

// Splits n units into `parts` counts as evenly as possible, the larger ones first.
std::vector<int64_t> SplitEvenly(int64_t n, int64_t parts) {
  std::vector<int64_t> counts(static_cast<size_t>(parts), n / parts);
  for (int64_t i = 0; i < n % parts; ++i) counts[static_cast<size_t>(i)] += 1;
  return counts;
}

// Boundaries [b0 = 0, b1, ..., b_parts = limit] of `parts` ranges made of whole units of
// `unit` elements (the last unit may be short when unit does not divide limit).
std::vector<int64_t> Cuts(int64_t limit, int64_t unit, int64_t parts) {
  const int64_t n_units = (limit + unit - 1) / unit;
  std::vector<int64_t> cuts = {0};
  int64_t units = 0;
  for (int64_t c : SplitEvenly(n_units, parts)) {
    units += c;
    cuts.push_back(std::min(units * unit, limit));
  }
  return cuts;
}

std::string TypeList(const std::vector<GgmlType>& types) {
  std::string s;
  for (GgmlType t : types) {
    const std::string name = GgmlTypeName(t);
    if (s.find(name) == std::string::npos) absl::StrAppend(&s, s.empty() ? "" : "/", name);
  }
  return s;
}

int64_t Bytes(GgmlType t, int64_t rows, int64_t cols) {
  // Callers have checked every cut against the type's blocks.
  absl::StatusOr<int64_t> b = MatrixBytes(t, rows, cols);
  return b.ok() ? *b : 0;
}

// Bytes of one layer's slice: `kv` KV heads (and their query heads), `ff` FFN rows.
int64_t LayerSliceBytes(const ModelConfig& c, const LayerWeightTypes& t, int64_t kv, int64_t ff) {
  const int64_t e = c.n_embd, hd = c.head_dim;
  const int64_t q_cols = kv * c.n_gqa() * hd;
  return Bytes(t.attn_norm, 1, e) + Bytes(t.ffn_norm, 1, e) + Bytes(t.attn_q, q_cols, e) +
         Bytes(t.attn_k, kv * hd, e) + Bytes(t.attn_v, kv * hd, e) +
         Bytes(t.attn_output, e, q_cols) + Bytes(t.ffn_gate, ff, e) + Bytes(t.ffn_up, ff, e) +
         Bytes(t.ffn_down, e, ff);
}

int64_t KvLayerBytes(const ModelConfig& c, int64_t kv_heads, const PlanOptions& o) {
  return 2 * kv_heads * c.head_dim * o.context_tokens * o.batch * o.kv_elem_bytes;
}

// Layer ranges of `pp` stages minimizing the largest stage cost, where stage [j, i) costs
// prefix[i] - prefix[j] plus first_extra if j == 0 and last_extra if i == L (dynamic program
// over split points; L and pp are at most a few hundred).
std::vector<int64_t> BalanceStages(const std::vector<int64_t>& layer_cost, int64_t pp,
                                   int64_t first_extra, int64_t last_extra) {
  const int64_t L = static_cast<int64_t>(layer_cost.size());
  std::vector<int64_t> prefix(static_cast<size_t>(L + 1), 0);
  for (int64_t i = 0; i < L; ++i) prefix[i + 1] = prefix[i] + layer_cost[i];
  auto cost = [&](int64_t j, int64_t i) {
    return prefix[i] - prefix[j] + (j == 0 ? first_extra : 0) + (i == L ? last_extra : 0);
  };
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  // best[k][i]: k + 1 stages covering layers [0, i); from[k][i]: where the last one starts.
  std::vector<std::vector<int64_t>> best(static_cast<size_t>(pp),
                                         std::vector<int64_t>(static_cast<size_t>(L + 1), kInf));
  std::vector<std::vector<int64_t>> from(best.size(),
                                         std::vector<int64_t>(static_cast<size_t>(L + 1), 0));
  for (int64_t i = 1; i <= L; ++i) best[0][i] = cost(0, i);
  for (int64_t k = 1; k < pp; ++k) {
    for (int64_t i = k + 1; i <= L; ++i) {
      for (int64_t j = k; j < i; ++j) {
        if (best[k - 1][j] == kInf) continue;
        const int64_t v = std::max(best[k - 1][j], cost(j, i));
        // Ties go to the later split point: fewer layers on the last stage, which also holds
        // the output.
        if (v <= best[k][i]) {
          best[k][i] = v;
          from[k][i] = j;
        }
      }
    }
  }
  std::vector<int64_t> bounds(static_cast<size_t>(pp + 1), 0);
  bounds[pp] = L;
  for (int64_t k = pp - 1; k >= 1; --k) bounds[k] = from[k][bounds[k + 1]];
  return bounds;
}

}  // namespace

int64_t Plan::max_rank_bytes() const {
  int64_t m = 0;
  for (const RankPlan& r : ranks) m = std::max(m, r.total_bytes());
  return m;
}

int64_t Plan::sum_weight_bytes() const {
  int64_t s = 0;
  for (const RankPlan& r : ranks) s += r.weight_bytes;
  return s;
}

int64_t Plan::sum_kv_bytes() const {
  int64_t s = 0;
  for (const RankPlan& r : ranks) s += r.kv_bytes;
  return s;
}

int64_t KvCacheBytes(const ModelConfig& c, const PlanOptions& o) {
  return c.n_layers * KvLayerBytes(c, c.n_kv_heads, o);
}

absl::StatusOr<Plan> LayoutPlan(const ModelConfig& c, const WeightTypes& w, int64_t tp, int64_t pp,
                                const PlanOptions& o) {
  if (static_cast<int64_t>(w.layers.size()) != c.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(w.source, ": types for ", w.layers.size(),
                                                   " layers, the model has ", c.n_layers));
  }
  if (c.n_layers < 1 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0 || c.head_dim < 1 ||
      c.n_ff < 1 || c.n_vocab < 1 || c.n_embd < 1) {
    return absl::InvalidArgumentError("the model config has an empty or inconsistent dimension");
  }
  if (o.context_tokens < 1 || o.batch < 1 || o.kv_elem_bytes < 1 || o.reserve_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("context (", o.context_tokens, "), batch (", o.batch,
                     ") and KV element bytes (", o.kv_elem_bytes,
                     ") must be at least 1 and the reserve (", o.reserve_bytes, ") not negative"));
  }
  if (o.context_tokens > (int64_t{1} << 24) || o.batch > (int64_t{1} << 20) ||
      o.kv_elem_bytes > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("context ", o.context_tokens, " x batch ", o.batch, " x ", o.kv_elem_bytes,
                     " bytes is beyond what the planner sizes (2^24 tokens, 2^20 sequences, "
                     "8 bytes per element)"));
  }
  // Every tensor's rows must be whole blocks of its type (this also rejects unknown types).
  TESSERA_RETURN_IF_ERROR(TotalWeightBytes(c, w).status());
  if (tp < 1 || pp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TP (", tp, ") and PP (", pp, ") must be at least 1"));
  }
  if (pp > c.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("PP=", pp, " exceeds the model's ", c.n_layers,
                                                   " layers: each pipeline stage needs a layer"));
  }
  if (tp > c.n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TP=", tp, " exceeds the model's ", c.n_kv_heads,
        " KV heads: each tensor-parallel rank needs at least one whole KV head (its query "
        "heads follow their KV group)"));
  }
  // Column cuts: attn_output at query-head boundaries, ffn_down at FFN-row boundaries, each on
  // whole blocks of every layer's type.
  std::vector<GgmlType> o_types, down_types;
  int64_t o_block = 1, down_block = 1;
  for (const LayerWeightTypes& t : w.layers) {
    o_types.push_back(t.attn_output);
    down_types.push_back(t.ffn_down);
    o_block = std::lcm(o_block, BlockElems(t.attn_output));
    down_block = std::lcm(down_block, BlockElems(t.ffn_down));
  }
  const int64_t group_cols = c.n_gqa() * c.head_dim;  // attn_output columns per KV head
  const int64_t head_unit = o_block / std::gcd(o_block, group_cols);
  const int64_t head_slices = (c.n_kv_heads + head_unit - 1) / head_unit;
  if (tp > head_slices) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TP=%d cannot split attn_output (row-parallel, %s with %d-element blocks): one KV head's "
        "query heads span %d columns (%d x %d), so column cuts must fall every %d KV heads "
        "(%d columns), which gives at most %d slice%s of the %d KV heads",
        tp, TypeList(o_types), o_block, group_cols, c.n_gqa(), c.head_dim, head_unit,
        head_unit * group_cols, head_slices, head_slices == 1 ? "" : "s", c.n_kv_heads));
  }
  if (c.n_ff % down_block != 0 || tp > c.n_ff / down_block) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TP=%d cannot split the FFN: ffn_down (row-parallel, %s) is cut on %d-element blocks, "
        "and n_ff = %d has %d of them",
        tp, TypeList(down_types), down_block, c.n_ff, c.n_ff / down_block));
  }
  const std::vector<int64_t> kv_cuts = Cuts(c.n_kv_heads, head_unit, tp);
  const std::vector<int64_t> ff_cuts = Cuts(c.n_ff, down_block, tp);
  const std::vector<int64_t> vocab_cuts = Cuts(c.n_vocab, 1, tp);

  // Pipeline stages balanced by bytes summed over a stage's TP ranks.
  const int64_t e = c.n_embd;
  std::vector<int64_t> layer_cost;
  for (const LayerWeightTypes& t : w.layers) {
    int64_t cost = 0;
    for (int64_t r = 0; r < tp; ++r) {
      const int64_t kv = kv_cuts[r + 1] - kv_cuts[r];
      cost += LayerSliceBytes(c, t, kv, ff_cuts[r + 1] - ff_cuts[r]) + KvLayerBytes(c, kv, o);
    }
    layer_cost.push_back(cost);
  }
  const int64_t embd_bytes = Bytes(w.token_embd, c.n_vocab, e);
  const int64_t output_bytes = Bytes(w.output, c.n_vocab, e) + tp * Bytes(w.output_norm, 1, e);
  const std::vector<int64_t> bounds = BalanceStages(layer_cost, pp, tp * embd_bytes, output_bytes);

  Plan plan;
  plan.tp = tp;
  plan.pp = pp;
  plan.ff_cut_elems = down_block;
  plan.kv_head_cut = head_unit;
  const int64_t rope_bytes = w.has_rope_freqs ? Bytes(GgmlType::kF32, 1, c.n_rot / 2) : 0;
  for (int64_t s = 0; s < pp; ++s) {
    for (int64_t r = 0; r < tp; ++r) {
      RankPlan rank;
      rank.rank = s * tp + r;
      rank.tp_rank = r;
      rank.pp_stage = s;
      ModelShard& sh = rank.shard;
      sh.layer_begin = bounds[s];
      sh.layer_end = bounds[s + 1];
      sh.kv_head_begin = kv_cuts[r];
      sh.kv_head_end = kv_cuts[r + 1];
      sh.ff_begin = ff_cuts[r];
      sh.ff_end = ff_cuts[r + 1];
      sh.vocab_begin = vocab_cuts[r];
      sh.vocab_end = vocab_cuts[r + 1];
      rank.n_kv_heads = sh.kv_head_end - sh.kv_head_begin;
      rank.n_heads = rank.n_kv_heads * c.n_gqa();
      int64_t bytes = rope_bytes;
      if (sh.first_stage()) bytes += embd_bytes;
      if (sh.last_stage(c)) {
        bytes += Bytes(w.output_norm, 1, e) + Bytes(w.output, sh.vocab_end - sh.vocab_begin, e);
      }
      for (int64_t l = sh.layer_begin; l < sh.layer_end; ++l) {
        bytes += LayerSliceBytes(c, w.layers[l], rank.n_kv_heads, sh.ff_end - sh.ff_begin);
      }
      rank.weight_bytes = bytes;
      rank.kv_bytes = (sh.layer_end - sh.layer_begin) * KvLayerBytes(c, rank.n_kv_heads, o);
      rank.reserve_bytes = o.reserve_bytes;
      TESSERA_RETURN_IF_ERROR(sh.Validate(c));
      plan.ranks.push_back(rank);
    }
  }
  return plan;
}

absl::Status CheckFits(const Plan& plan, int64_t device_memory_bytes) {
  const RankPlan* worst = nullptr;
  for (const RankPlan& r : plan.ranks) {
    if (worst == nullptr || r.total_bytes() > worst->total_bytes()) worst = &r;
  }
  if (worst == nullptr || worst->total_bytes() <= device_memory_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "TP", plan.tp, " x PP", plan.pp, " does not fit: rank ", worst->rank, " (tp ", worst->tp_rank,
      ", stage ", worst->pp_stage, ") needs ", FormatBytes(worst->total_bytes()), " (weights ",
      FormatBytes(worst->weight_bytes), " + KV cache ", FormatBytes(worst->kv_bytes), " + reserve ",
      FormatBytes(worst->reserve_bytes), ") but a device has ", FormatBytes(device_memory_bytes),
      ": short by ", FormatBytes(worst->total_bytes() - device_memory_bytes)));
}

absl::StatusOr<Plan> MakePlan(const ModelConfig& c, const WeightTypes& w,
                              const ClusterSpec& cluster, const PlanOptions& o) {
  if (cluster.n_gpus < 1 || cluster.gpu_memory_bytes < 1 || cluster.gpus_per_node < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the cluster needs at least 1 GPU (got ", cluster.n_gpus,
                     "), memory per GPU (got ", cluster.gpu_memory_bytes,
                     " bytes) and at least 1 GPU per node (got ", cluster.gpus_per_node, ")"));
  }
  if (o.tp < 0 || o.pp < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TP (", o.tp, ") and PP (", o.pp, ") must be positive, or 0 to choose"));
  }
  if (o.tp > 0 && o.pp > 0) {
    TESSERA_ASSIGN_OR_RETURN(Plan plan, LayoutPlan(c, w, o.tp, o.pp, o));
    if (plan.gpus() > cluster.n_gpus) {
      return absl::InvalidArgumentError(absl::StrCat("TP", o.tp, " x PP", o.pp, " needs ",
                                                     plan.gpus(), " GPUs but the cluster has ",
                                                     cluster.n_gpus));
    }
    TESSERA_RETURN_IF_ERROR(CheckFits(plan, cluster.gpu_memory_bytes));
    return plan;
  }

  TESSERA_ASSIGN_OR_RETURN(WeightTotals totals, TotalWeightBytes(c, w));
  const int64_t whole = totals.bytes + KvCacheBytes(c, o);
  const int64_t max_tp = o.tp > 0 ? o.tp : std::min(cluster.gpus_per_node, c.n_kv_heads);
  const int64_t max_gpus = o.tp > 0   ? o.tp * c.n_layers
                           : o.pp > 0 ? o.pp * max_tp
                                      : max_tp * c.n_layers;
  absl::Status at_n_gpus = absl::OkStatus();  // why nothing worked on cluster.n_gpus
  absl::Status last = absl::InvalidArgumentError("no TP x PP layout was tried");
  for (int64_t g = 1; g <= max_gpus; ++g) {
    // Every rank holds at least its share of the model: skip GPU counts that cannot fit.
    const bool hopeless = whole / g + o.reserve_bytes > cluster.gpu_memory_bytes;
    if (hopeless && g != cluster.n_gpus) continue;
    for (int64_t tp = std::min(max_tp, g); tp >= 1; --tp) {
      if (g % tp != 0 || (o.tp > 0 && tp != o.tp)) continue;
      const int64_t pp = g / tp;
      if (pp > c.n_layers || (o.pp > 0 && pp != o.pp)) continue;
      absl::StatusOr<Plan> plan = LayoutPlan(c, w, tp, pp, o);
      absl::Status s = plan.ok() ? CheckFits(*plan, cluster.gpu_memory_bytes) : plan.status();
      if (s.ok()) {
        if (g <= cluster.n_gpus) return plan;
        return absl::ResourceExhaustedError(absl::StrCat(
            w.source, " does not fit on ", cluster.n_gpus, " GPU", cluster.n_gpus == 1 ? "" : "s",
            " of ", FormatBytes(cluster.gpu_memory_bytes),
            at_n_gpus.ok() ? "" : absl::StrCat(" (", at_n_gpus.message(), ")"),
            "; the smallest layout that fits is TP", tp, " x PP", pp, " = ", g, " GPUs"));
      }
      if (g == cluster.n_gpus && at_n_gpus.ok()) at_n_gpus = s;
      last = s;
    }
  }
  const absl::Status& why = at_n_gpus.ok() ? last : at_n_gpus;
  return absl::Status(
      why.code(), absl::StrCat(w.source, ": no TP x PP layout",
                               o.tp > 0 || o.pp > 0 ? " of the shape asked for" : "", " fits on ",
                               cluster.n_gpus, " GPU", cluster.n_gpus == 1 ? "" : "s", " of ",
                               FormatBytes(cluster.gpu_memory_bytes), " (", why.message(),
                               "), nor on up to ", max_gpus, " such GPUs"));
}

}  // namespace tessera
