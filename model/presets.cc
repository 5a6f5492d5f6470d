#include "model/presets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

struct Preset {
  const char* name;
  int64_t n_embd, n_layers, n_heads, n_kv_heads, n_ff, n_vocab, n_ctx;
  float rope_base;
  float rope_llama3_factor;  // 0: no llama3 scaling
  bool tied;
};

// config.json of each model (Hugging Face): hidden_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, intermediate_size, vocab_size,
// max_position_embeddings, rope_theta, rope_scaling.factor, tie_word_embeddings.
constexpr Preset kPresets[] = {
    {"smollm2-135m", 576, 30, 9, 3, 1536, 49152, 8192, 100000.0f, 0.0f, true},
    {"llama3-1b", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0f, 32.0f, true},
    {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0f, 0.0f, false},
    {"llama2-13b", 5120, 40, 40, 40, 13824, 32000, 4096, 10000.0f, 0.0f, false},
    {"llama3-8b", 4096, 32, 32, 8, 14336, 128256, 131072, 500000.0f, 8.0f, false},
    {"llama3-70b", 8192, 80, 64, 8, 28672, 128256, 131072, 500000.0f, 8.0f, false},
    {"llama3-405b", 16384, 126, 128, 8, 53248, 128256, 131072, 500000.0f, 8.0f, false},
};

}  // namespace

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

absl::StatusOr<ModelConfig> PresetConfig(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.architecture = "llama";
    c.name = p.name;
    c.n_embd = p.n_embd;
    c.n_layers = p.n_layers;
    c.n_heads = p.n_heads;
    c.n_kv_heads = p.n_kv_heads;
    c.head_dim = p.n_embd / p.n_heads;
    c.n_rot = c.head_dim;
    c.n_ff = p.n_ff;
    c.n_vocab = p.n_vocab;
    c.n_ctx = p.n_ctx;
    c.rope_freq_base = p.rope_base;
    c.rms_norm_eps = 1e-5f;
    if (p.rope_llama3_factor > 0.0f) {
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = p.rope_llama3_factor;
      c.rope_scaling.original_context_length = 8192;
      c.rope_scaling.low_freq_factor = 1.0f;
      c.rope_scaling.high_freq_factor = 4.0f;
    }
    c.tied_output = p.tied;
    return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown model shape '", std::string(name), "' (known: ",
                                          absl::StrJoin(PresetNames(), ", "), ")"));
}

}  // namespace tessera
