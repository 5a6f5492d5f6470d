// The llama forward pass, written once over the Backend and the shard hooks.
//
//   embed -> for each layer: (rmsnorm, attention, residual, rmsnorm, SwiGLU FFN, residual)
//         -> rmsnorm -> logits
//
// A LlamaModel holds one shard: the layers, heads, FFN rows and vocab rows a ModelShard says it
// owns (the whole model by default). Tensor parallelism needs an all-reduce after the attention
// output and FFN down projections and a gather of the vocab-parallel logits; pipeline
// parallelism needs hidden states received before the first owned layer and sent after the
// last. Those are ShardHooks: the cluster supplies them, and for a whole model they are no-ops,
// so the math below never branches on the layout.
//
// Thread-safety: one Forward at a time.
#ifndef TESSERA_MODEL_LLAMA_H_
#define TESSERA_MODEL_LLAMA_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/weights.h"

namespace tessera {

// What one engine owns. Ranges are half-open. Query heads follow their KV group: the shard's
// query heads are exactly those of its KV heads (kv_head_begin * n_gqa ...).
struct ModelShard {
  int64_t layer_begin = 0, layer_end = 0;    // pipeline stage
  int64_t kv_head_begin = 0, kv_head_end = 0;  // tensor-parallel attention slice
  int64_t ff_begin = 0, ff_end = 0;          // tensor-parallel FFN slice (block-aligned)
  int64_t vocab_begin = 0, vocab_end = 0;    // vocab-parallel logits slice

  bool first_stage() const { return layer_begin == 0; }
  bool last_stage(const ModelConfig& c) const { return layer_end == c.n_layers; }

  static ModelShard Whole(const ModelConfig& c);
  // Checks the ranges against the config; errors say which range is wrong.
  absl::Status Validate(const ModelConfig& c) const;
};

// Where the cluster inserts communication. The defaults do nothing (a whole model).
class ShardHooks {
 public:
  virtual ~ShardHooks() = default;
  // Sums `data` (n floats of backend memory) across the tensor-parallel group, in place.
  virtual absl::Status AllReduceSum(float* /*data*/, int64_t /*n*/) { return absl::OkStatus(); }
  // Pipeline: fills x (n floats) with the previous stage's hidden states.
  virtual absl::Status ReceiveHidden(float* /*x*/, int64_t /*n*/) {
    return absl::FailedPreconditionError("this shard has no previous pipeline stage");
  }
  // Pipeline: hands x to the next stage.
  virtual absl::Status SendHidden(const float* /*x*/, int64_t /*n*/) {
    return absl::FailedPreconditionError("this shard has no next pipeline stage");
  }
  // Vocab-parallel: turns local logits (n_rows, local_vocab) into full ones (n_rows, n_vocab)
  // in `full` (host memory). The default copies a whole-vocab shard.
  virtual absl::Status GatherLogits(const float* local, int64_t n_rows, int64_t local_vocab,
                                    int64_t n_vocab, float* full);
};

// One step's work for one sequence: `tokens` appended at positions start_pos, start_pos+1, ...
// (a prefill chunk or a single decode token). Its KV blocks must already be reserved.
struct SequenceStep {
  std::vector<int32_t> tokens;
  int32_t start_pos = 0;
  const std::vector<int32_t>* block_table = nullptr;  // blocks covering start_pos + size
  bool want_logits = true;  // logits of the last token of this step
};

class LlamaModel {
 public:
  // Loads the shard's weights through the backend and allocates its KV cache of kv_blocks
  // blocks of kv_block_tokens tokens, holding K and V as kv_type.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const WeightSource& weights,
                                                            const ModelShard& shard,
                                                            Backend* backend,
                                                            ShardHooks* hooks,
                                                            int64_t kv_blocks,
                                                            int kv_block_tokens,
                                                            KvType kv_type = KvType::kF32);
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }
  KvType kv_type() const { return kv_type_; }
  // Bytes of weights this shard streams per forward pass.
  int64_t weight_bytes() const { return weight_bytes_; }

  // Runs the batch. On the last stage, `logits` (host memory) receives n_vocab floats for each
  // step with want_logits, in batch order; elsewhere it is untouched.
  absl::Status Forward(const std::vector<SequenceStep>& batch, std::vector<float>* logits);

 private:
  struct Layer {
    std::unique_ptr<Weight> attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  };
  LlamaModel(const ModelConfig& c, const ModelShard& s, Backend* b, ShardHooks* h)
      : config_(c), shard_(s), backend_(b), hooks_(h) {}
  absl::Status Load(const WeightSource& weights);
  absl::Status EnsureBuffers(int64_t n_tokens, int64_t n_logit_rows);
  // The whole vocabulary in this process with the default hooks: the logits go straight to
  // Forward's caller, and a backend that writes host memory needs no logits buffer of its own.
  bool LogitsToCaller() const {
    return hooks_ == &default_hooks_ && n_vocab_local_ == config_.n_vocab;
  }
  // ... and the output product writes them there itself (no logits buffer, no copy).
  bool OutputWritesCallerLogits() const {
    return LogitsToCaller() && backend_->WritesHostMemory();
  }

  ModelConfig config_;
  ModelShard shard_;
  Backend* backend_;
  ShardHooks* hooks_;
  ShardHooks default_hooks_;
  RopeParams rope_;
  int64_t n_heads_ = 0, n_kv_heads_ = 0, n_ff_ = 0, n_vocab_local_ = 0;
  int64_t weight_bytes_ = 0;
  int kv_block_tokens_ = 16;
  KvType kv_type_ = KvType::kF32;

  std::unique_ptr<Weight> token_embd_, output_norm_, output_;
  std::vector<Layer> layers_;

  // Activation buffers, grown to the largest step seen.
  int64_t capacity_tokens_ = 0, capacity_logit_rows_ = 0;
  std::unique_ptr<DeviceBuffer> x_, h_, q_, k_, v_, att_, proj_, gate_, up_, sel_, logits_;
  std::vector<float> host_logits_;
};

}  // namespace tessera

#endif  // TESSERA_MODEL_LLAMA_H_
