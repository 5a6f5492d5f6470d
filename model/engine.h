// Engine: one model shard plus its KV cache bookkeeping. `Step` runs one batch in which each
// sequence contributes a prefill chunk or one decode token at its own position; the engine
// reserves KV blocks, runs the forward pass and returns the logits that were asked for.
//
// This is what every worker of the cluster runs on its shard, and what `tessera generate` and
// `tessera bench` run in-process with the whole model. Admission (who may run) belongs to the
// caller: Step fails with RESOURCE_EXHAUSTED, changing nothing, when the KV cache is full.
//
// Thread-safety: one thread at a time.
#ifndef TESSERA_MODEL_ENGINE_H_
#define TESSERA_MODEL_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "model/weights.h"

namespace tessera {

struct EngineOptions {
  int64_t kv_budget_bytes = int64_t{256} << 20;  // memory for the KV cache
  int kv_block_tokens = 16;
  // > 0: exactly this many KV blocks (the budget is ignored). The cluster sets it so that every
  // rank of a group holds the same number of blocks.
  int64_t kv_blocks = 0;
  // How the cache holds K and V; unset: the backend's PreferredKvType() (Engine::Create), or
  // f32 where no backend is at hand (KvBlockCapacity alone, which then counts f32 blocks).
  std::optional<KvType> kv_type;
};

// One sequence's part of a step: append `tokens` to sequence `id` (new ids start empty).
struct StepInput {
  SeqId id = 0;
  std::vector<int32_t> tokens;
  bool want_logits = true;  // logits after this sequence's last token
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const WeightSource& weights,
                                                        const ModelShard& shard,
                                                        Backend* backend, ShardHooks* hooks,
                                                        const EngineOptions& options);

  // KV blocks `options` give a shard of this config (options.kv_blocks if set, else what the
  // budget holds); an error if that is not at least one.
  static absl::StatusOr<int64_t> KvBlockCapacity(const ModelConfig& config,
                                                 const ModelShard& shard,
                                                 const EngineOptions& options);

  const ModelConfig& config() const { return model_->config(); }
  LlamaModel& model() { return *model_; }
  KvBlockManager& kv() { return kv_; }

  // Runs one batch (each id at most once). `logits` receives n_vocab floats per input with
  // want_logits, in input order. On error no sequence changes length.
  absl::Status Step(const std::vector<StepInput>& inputs, std::vector<float>* logits);

  // Tokens sequence `id` holds (0 if unknown).
  int64_t Length(SeqId id) const { return kv_.Length(id); }
  // Drops a sequence and its KV blocks.
  void Free(SeqId id) { kv_.Free(id); }

 private:
  Engine(std::unique_ptr<LlamaModel> model, int64_t n_blocks, int block_tokens)
      : model_(std::move(model)), kv_(n_blocks, block_tokens) {}
  std::unique_ptr<LlamaModel> model_;
  KvBlockManager kv_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_ENGINE_H_
