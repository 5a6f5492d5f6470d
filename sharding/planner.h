// The planner: a pure function from (model config + per-tensor types, cluster capacity) to a
// tensor-parallel (TP) x pipeline-parallel (PP) layout with every rank's shard and its exact
// bytes. No weights are read; the worker only applies the plan (gpt-fast's tp.py applies TP to
// an unchanged model).
//
// Sharding rules (DESIGN.md):
// - PP: contiguous layer ranges, balanced by per-rank bytes (weights + KV cache), counting the
//   token embedding on stage 0 (each TP rank of it holds the whole table: the lookup is not
//   split) and output_norm + this rank's vocab slice of the output on the last stage.
// - TP, attention: whole KV heads per rank, the query heads of those KV groups following them
//   (column-parallel attn_q/k/v rows); uneven splits when the counts do not divide (3 KV heads
//   on TP=2: 2 + 1). attn_output is row-parallel: each rank holds the columns of its query
//   heads, and those column cuts must fall on block boundaries of attn_output's type.
// - TP, FFN: ffn_gate/ffn_up rows and ffn_down columns [ff_begin, ff_end), cut on block
//   boundaries of the FFN types (32 or 256 elements), as evenly as possible.
// - TP, output: vocab rows split as evenly as possible (any split is valid for rows).
// - Norms (and rope_freqs) are replicated on every rank that needs them.
// Rank numbering: rank = pp_stage * tp + tp_rank.
//
// Refusals (InvalidArgument / ResourceExhausted) say why: TP above the KV head count, column
// cuts that cannot fall on block boundaries, PP above the layer count, a rank that does not fit
// in device memory (and by how much).
#ifndef TESSERA_SHARDING_PLANNER_H_
#define TESSERA_SHARDING_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/llama.h"
#include "sharding/weight_types.h"

namespace tessera {

struct ClusterSpec {
  int64_t n_gpus = 1;            // devices available; auto mode uses the fewest that fit
  int64_t gpu_memory_bytes = 0;  // memory of each device
  int64_t gpus_per_node = 8;     // auto mode keeps TP within a node (TP <= this)
};

struct PlanOptions {
  int64_t tp = 0, pp = 0;         // the layout asked for; 0 = choose (auto)
  int64_t context_tokens = 8192;  // KV cache: tokens per sequence...
  int64_t batch = 1;              // ... times concurrent sequences
  int64_t kv_elem_bytes = 2;      // bytes per cached K or V element (2: F16)
  int64_t reserve_bytes = 0;      // per-device workspace: activations, runtime, fragmentation
};

// One rank's share.
struct RankPlan {
  int64_t rank = 0, tp_rank = 0, pp_stage = 0;
  ModelShard shard;
  int64_t n_heads = 0, n_kv_heads = 0;  // query and KV heads this rank computes
  int64_t weight_bytes = 0;             // exact bytes of the tensor slices it holds
  int64_t kv_bytes = 0;                 // its layers x its KV heads x context x batch
  int64_t reserve_bytes = 0;
  int64_t total_bytes() const { return weight_bytes + kv_bytes + reserve_bytes; }
};

struct Plan {
  int64_t tp = 1, pp = 1;
  int64_t ff_cut_elems = 1;     // FFN cuts fall on multiples of this (lcm of block sizes)
  int64_t kv_head_cut = 1;      // KV-head cuts fall on multiples of this many heads
  std::vector<RankPlan> ranks;  // by rank
  int64_t gpus() const { return tp * pp; }
  int64_t max_rank_bytes() const;    // the largest total_bytes()
  int64_t sum_weight_bytes() const;  // over all ranks (whole model + replication)
  int64_t sum_kv_bytes() const;
};

// The layout TP x PP for this model: every rank's shard and bytes, without a memory check.
// Errors explain a layout that cannot work.
absl::StatusOr<Plan> LayoutPlan(const ModelConfig& config, const WeightTypes& types, int64_t tp,
                                int64_t pp, const PlanOptions& options);

// OK if every rank fits in `device_memory_bytes`; else RESOURCE_EXHAUSTED naming the largest
// rank, its bytes and the shortfall.
absl::Status CheckFits(const Plan& plan, int64_t device_memory_bytes);

// The plan for the cluster: the layout asked for (options.tp/pp; either may be 0 = choose), or
// the smallest TP x PP (GPU count) that fits, preferring TP within a node and PP across nodes.
// Refuses with the reason when nothing fits on cluster.n_gpus devices, saying how many would.
absl::StatusOr<Plan> MakePlan(const ModelConfig& config, const WeightTypes& types,
                              const ClusterSpec& cluster, const PlanOptions& options);

// KV cache bytes of the whole model for options' context x batch (all layers, all KV heads).
int64_t KvCacheBytes(const ModelConfig& config, const PlanOptions& options);

}  // namespace tessera

#endif  // TESSERA_SHARDING_PLANNER_H_
