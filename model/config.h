// ModelConfig: the hyper-parameters of a llama-architecture model, read from GGUF metadata
// (keys prefixed by `general.architecture`, e.g. `llama.embedding_length`) and checked against
// the file's tensors.
//
// Only the llama architecture (Llama 2/3.x, SmolLM2, Mistral-style GQA models converted as
// "llama") is accepted; other architectures are refused with a message naming them. Read-only
// value type; thread-compatible.
#ifndef TESSERA_MODEL_CONFIG_H_
#define TESSERA_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace tessera {

// RoPE frequency scaling. GGUF files of Llama 3.1+ usually carry the llama3 scaling as a
// precomputed per-frequency divisor tensor `rope_freqs.weight` (n_rot/2 floats) instead of
// keys; `has_rope_freqs_tensor` records that. The keys are used when present.
struct RopeScaling {
  std::string type = "none";            // {arch}.rope.scaling.type: none, linear, yarn, llama3
  float factor = 1.0f;                  // {arch}.rope.scaling.factor
  int64_t original_context_length = 0;  // {arch}.rope.scaling.original_context_length
  float low_freq_factor = 1.0f;         // {arch}.rope.scaling.low_freq_factor (llama3)
  float high_freq_factor = 4.0f;        // {arch}.rope.scaling.high_freq_factor (llama3)
  bool has_rope_freqs_tensor = false;   // `rope_freqs.weight` present
};

struct ModelConfig {
  std::string architecture;  // general.architecture ("llama")
  std::string name;          // general.name, "" if absent

  int64_t n_embd = 0;      // {arch}.embedding_length: residual stream width
  int64_t n_layers = 0;    // {arch}.block_count
  int64_t n_heads = 0;     // {arch}.attention.head_count: query heads
  int64_t n_kv_heads = 0;  // {arch}.attention.head_count_kv (default n_heads): K/V heads (GQA)
  int64_t head_dim = 0;    // {arch}.attention.key_length, else n_embd / n_heads
  int64_t n_rot = 0;       // {arch}.rope.dimension_count (default head_dim): rotated dims
  int64_t n_ff = 0;        // {arch}.feed_forward_length: FFN hidden width
  int64_t n_vocab = 0;     // {arch}.vocab_size, else len(tokenizer.ggml.tokens), else embd rows
  int64_t n_ctx = 0;       // {arch}.context_length: trained context
  float rope_freq_base = 10000.0f;  // {arch}.rope.freq_base
  float rms_norm_eps = 1e-5f;       // {arch}.attention.layer_norm_rms_epsilon
  RopeScaling rope_scaling;
  bool tied_output = false;  // no `output.weight`: logits use token_embd.weight

  int64_t q_dim() const { return n_heads * head_dim; }      // rows of attn_q
  int64_t kv_dim() const { return n_kv_heads * head_dim; }  // rows of attn_k / attn_v
  int64_t n_gqa() const { return n_heads / n_kv_heads; }    // query heads per KV head
};

// Reads the config from metadata and validates it and every required tensor's presence and shape
// (token_embd, output_norm, output if untied, rope_freqs if present, and blk.N.{attn_norm,
// attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down} for every layer).
absl::StatusOr<ModelConfig> LoadModelConfig(const GgufFile& file);

// The metadata part alone (no tensor checks beyond what the config needs to be derived).
absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& file);
// The tensor part alone.
absl::Status ValidateModelTensors(const ModelConfig& config, const GgufFile& file);

}  // namespace tessera

#endif  // TESSERA_MODEL_CONFIG_H_
