#include "model/engine.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<int64_t> Engine::KvBlockCapacity(const ModelConfig& c, const ModelShard& shard,
                                                const EngineOptions& options) {
  TESSERA_RETURN_IF_ERROR(shard.Validate(c));
  if (options.kv_block_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size must be at least 1 token, got ", options.kv_block_tokens));
  }
  if (options.kv_blocks > 0) return options.kv_blocks;
  KvLayout layout;
  layout.n_layers = static_cast<int>(shard.layer_end - shard.layer_begin);
  layout.n_kv_heads = static_cast<int>(shard.kv_head_end - shard.kv_head_begin);
  layout.head_dim = static_cast<int>(c.head_dim);
  layout.block_tokens = options.kv_block_tokens;
  layout.type = options.kv_type.value_or(KvType::kF32);
  TESSERA_ASSIGN_OR_RETURN(int64_t n_blocks, KvBlocksForBudget(layout, options.kv_budget_bytes));
  if (n_blocks < 1) {
    layout.n_blocks = 1;
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache budget of ", options.kv_budget_bytes, " bytes holds no block of ",
        options.kv_block_tokens, " tokens (", layout.bytes(), " bytes each)"));
  }
  return n_blocks;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const WeightSource& weights,
                                                       const ModelShard& shard, Backend* backend,
                                                       ShardHooks* hooks,
                                                       const EngineOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("engine: no backend");
  EngineOptions resolved = options;
  if (!resolved.kv_type) resolved.kv_type = backend->PreferredKvType();
  TESSERA_ASSIGN_OR_RETURN(int64_t n_blocks, KvBlockCapacity(weights.config(), shard, resolved));
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                           LlamaModel::Create(weights, shard, backend, hooks, n_blocks,
                                              options.kv_block_tokens, *resolved.kv_type));
  return std::unique_ptr<Engine>(new Engine(std::move(model), n_blocks, options.kv_block_tokens));
}

absl::Status Engine::Step(const std::vector<StepInput>& inputs, std::vector<float>* logits) {
  const ModelConfig& c = config();
  std::unordered_set<SeqId> seen;
  int64_t blocks_needed = 0;
  for (const StepInput& in : inputs) {
    if (!seen.insert(in.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", in.id, " appears twice in a step"));
    }
    if (in.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", in.id, ": no tokens to run"));
    }
    for (int32_t t : in.tokens) {
      if (t < 0 || t >= c.n_vocab) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", in.id, ": token id ", t, " is outside the vocabulary (", c.n_vocab,
            " tokens)"));
      }
    }
    const int64_t total = Length(in.id) + static_cast<int64_t>(in.tokens.size());
    if (total > c.n_ctx) {
      return absl::OutOfRangeError(absl::StrCat("sequence ", in.id, " would hold ", total,
                                                " tokens, more than the context length ",
                                                c.n_ctx));
    }
    blocks_needed += kv_.BlocksNeeded(in.id, total);
  }
  if (blocks_needed > kv_.free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache full: this step needs ", blocks_needed, " more blocks, ", kv_.free_blocks(),
        " of ", kv_.n_blocks(), " are free"));
  }
  std::vector<SequenceStep> batch(inputs.size());
  std::vector<int64_t> old_length(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    old_length[i] = Length(in.id);
    TESSERA_RETURN_IF_ERROR(
        kv_.Reserve(in.id, old_length[i] + static_cast<int64_t>(in.tokens.size())));
    batch[i].tokens = in.tokens;
    batch[i].start_pos = static_cast<int32_t>(old_length[i]);
    batch[i].block_table = &kv_.BlockTable(in.id);
    batch[i].want_logits = in.want_logits;
  }
  absl::Status s = model_->Forward(batch, logits);
  if (!s.ok()) {
    // Leave lengths as they were; a new sequence that never ran is dropped again.
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (old_length[i] == 0) kv_.Free(inputs[i].id);
    }
    return s;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    TESSERA_RETURN_IF_ERROR(kv_.SetLength(
        inputs[i].id, old_length[i] + static_cast<int64_t>(inputs[i].tokens.size())));
  }
  return absl::OkStatus();
}

}  // namespace tessera
