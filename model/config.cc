// Llama config from GGUF metadata. Key names follow the gguf package's constants
// ({arch}.embedding_length, {arch}.attention.head_count_kv, ...).
#include "model/config.h"

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Hyper-parameters are bounded so that products of two of them fit int64 comfortably.
constexpr int64_t kMaxHyperParam = std::numeric_limits<int32_t>::max();

class ConfigReader {
 public:
  ConfigReader(const GgufFile& f, std::string arch) : f_(f), arch_(std::move(arch)) {}

  std::string Key(std::string_view suffix) const { return absl::StrCat(arch_, ".", Av(suffix)); }

  // A positive integer hyper-parameter; `fallback` < 0 means required.
  absl::StatusOr<int64_t> Positive(std::string_view suffix, int64_t fallback = -1) const {
    const std::string key = Key(suffix);
    if (!f_.Has(key)) {
      if (fallback >= 0) return fallback;
      return absl::InvalidArgumentError(absl::StrCat(
          f_.path(), ": metadata key '", key, "' is missing (required for ", arch_, " models)"));
    }
    absl::StatusOr<uint64_t> v = f_.GetU64(key);
    if (!v.ok()) return v.status();
    if (*v < 1 || *v > static_cast<uint64_t>(kMaxHyperParam)) {
      return absl::InvalidArgumentError(absl::StrCat(f_.path(), ": metadata key '", key, "' is ",
                                                     *v, "; expected 1..", kMaxHyperParam));
    }
    return static_cast<int64_t>(*v);
  }

  // A finite float in (lo, hi]; `required` or else `fallback`.
  absl::StatusOr<float> Float(std::string_view suffix, bool required, float fallback, double lo,
                              double hi) const {
    const std::string key = Key(suffix);
    if (!f_.Has(key) && required) {
      return absl::InvalidArgumentError(absl::StrCat(
          f_.path(), ": metadata key '", key, "' is missing (required for ", arch_, " models)"));
    }
    absl::StatusOr<float> v = f_.GetF32Or(key, fallback);
    if (!v.ok()) return v.status();
    if (!std::isfinite(*v) || *v <= lo || *v > hi) {
      return absl::InvalidArgumentError(absl::StrCat(f_.path(), ": metadata key '", key, "' is ",
                                                     *v, "; expected a value in (", lo, ", ", hi,
                                                     "]"));
    }
    return *v;
  }

  absl::Status Error(std::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat(f_.path(), ": ", Av(msg)));
  }

 private:
  const GgufFile& f_;
  std::string arch_;
};

#define TESSERA_ASSIGN(lhs, expr)                \
  do {                                           \
    auto _r = (expr);                            \
    if (!_r.ok()) return std::move(_r).status(); \
    lhs = *std::move(_r);                        \
  } while (0)

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// Checks that `name` exists with exactly `dims` (ne order; trailing dims of 1 are ignored).
absl::Status ExpectTensor(const GgufFile& f, const std::string& name,
                          const std::vector<int64_t>& want, std::string_view meaning) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.path(), ": tensor '", name, "' is missing (required by the llama architecture)"));
  }
  std::vector<int64_t> have(t->ne.begin(), t->ne.begin() + t->n_dims);
  bool same = true;
  for (int d = 0; d < kMaxDims; ++d) {
    const int64_t w = d < static_cast<int>(want.size()) ? want[d] : 1;
    if (t->ne[d] != w) same = false;
  }
  if (!same) {
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tensor '", name, "' has shape ",
                                                   ShapeString(have), "; expected ",
                                                   ShapeString(want), " (", Av(meaning), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& f) {
  ModelConfig c;
  absl::StatusOr<std::string_view> arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  c.architecture = std::string(*arch);
  if (c.architecture != "llama") {
    return absl::UnimplementedError(
        absl::StrCat(f.path(), ": architecture '", c.architecture,
                     "' is not supported (Tessera runs llama-architecture models)"));
  }
  absl::StatusOr<std::string_view> name = f.GetStringOr("general.name", "");
  if (!name.ok()) return name.status();
  c.name = std::string(*name);

  ConfigReader r(f, c.architecture);
  TESSERA_ASSIGN(c.n_embd, r.Positive("embedding_length"));
  TESSERA_ASSIGN(c.n_layers, r.Positive("block_count"));
  TESSERA_ASSIGN(c.n_heads, r.Positive("attention.head_count"));
  TESSERA_ASSIGN(c.n_kv_heads, r.Positive("attention.head_count_kv", c.n_heads));
  TESSERA_ASSIGN(c.n_ff, r.Positive("feed_forward_length"));
  TESSERA_ASSIGN(c.n_ctx, r.Positive("context_length"));

  if (c.n_heads % c.n_kv_heads != 0) {
    return r.Error(absl::StrCat("n_heads ", c.n_heads, " (", r.Key("attention.head_count"),
                                ") is not a multiple of n_kv_heads ", c.n_kv_heads, " (",
                                r.Key("attention.head_count_kv"), ")"));
  }
  if (f.Has(r.Key("attention.key_length"))) {
    TESSERA_ASSIGN(c.head_dim, r.Positive("attention.key_length"));
  } else {
    if (c.n_embd % c.n_heads != 0) {
      return r.Error(absl::StrCat("n_embd ", c.n_embd, " is not a multiple of n_heads ", c.n_heads,
                                  " and ", r.Key("attention.key_length"),
                                  " is absent, so the head size is unknown"));
    }
    c.head_dim = c.n_embd / c.n_heads;
  }
  int64_t value_length;
  TESSERA_ASSIGN(value_length, r.Positive("attention.value_length", c.head_dim));
  if (value_length != c.head_dim) {
    return r.Error(absl::StrCat(r.Key("attention.value_length"), " ", value_length,
                                " differs from the key length ", c.head_dim,
                                "; llama attention needs them equal"));
  }
  TESSERA_ASSIGN(c.n_rot, r.Positive("rope.dimension_count", c.head_dim));
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) {
    return r.Error(absl::StrCat(r.Key("rope.dimension_count"), " is ", c.n_rot,
                                "; expected an even number <= head_dim ", c.head_dim));
  }
  TESSERA_ASSIGN(c.rope_freq_base, r.Float("rope.freq_base", false, 10000.0f, 0.0, 1e12));
  TESSERA_ASSIGN(c.rms_norm_eps,
                 r.Float("attention.layer_norm_rms_epsilon", true, 1e-5f, 0.0, 1.0));

  // Vocabulary size: explicit key, else the tokenizer's token list, else the embedding rows.
  if (f.Has(r.Key("vocab_size"))) {
    TESSERA_ASSIGN(c.n_vocab, r.Positive("vocab_size"));
  } else if (const GgufValue* tokens = f.Find("tokenizer.ggml.tokens"); tokens != nullptr) {
    if (tokens->type() != GgufValueType::kArray || tokens->size() == 0 ||
        tokens->size() > static_cast<uint64_t>(kMaxHyperParam)) {
      return r.Error(absl::StrCat("metadata key 'tokenizer.ggml.tokens' is ", tokens->ToString(2),
                                  "; expected a non-empty ARRAY of STRING"));
    }
    c.n_vocab = static_cast<int64_t>(tokens->size());
  } else if (const GgufTensorInfo* embd = f.FindTensor("token_embd.weight"); embd != nullptr) {
    c.n_vocab = embd->ne[1];
  } else {
    return r.Error(absl::StrCat("the vocabulary size is unknown: no ", r.Key("vocab_size"),
                                ", no tokenizer.ggml.tokens and no token_embd.weight"));
  }

  // RoPE scaling.
  RopeScaling& rs = c.rope_scaling;
  absl::StatusOr<std::string_view> type = f.GetStringOr(r.Key("rope.scaling.type"), "none");
  if (!type.ok()) return type.status();
  rs.type = std::string(*type);
  if (rs.type != "none" && rs.type != "linear" && rs.type != "yarn" && rs.type != "llama3") {
    return r.Error(absl::StrCat(r.Key("rope.scaling.type"), " is '", rs.type,
                                "'; expected none, linear, yarn or llama3"));
  }
  TESSERA_ASSIGN(rs.factor, r.Float("rope.scaling.factor", false, 1.0f, 0.0, 1e6));
  TESSERA_ASSIGN(rs.original_context_length, r.Positive("rope.scaling.original_context_length", 0));
  TESSERA_ASSIGN(rs.low_freq_factor, r.Float("rope.scaling.low_freq_factor", false, 1.0f, 0, 1e6));
  TESSERA_ASSIGN(rs.high_freq_factor,
                 r.Float("rope.scaling.high_freq_factor", false, 4.0f, 0, 1e6));
  rs.has_rope_freqs_tensor = f.FindTensor("rope_freqs.weight") != nullptr;

  c.tied_output = f.FindTensor("output.weight") == nullptr;
  return c;
}

absl::Status ValidateModelTensors(const ModelConfig& c, const GgufFile& f) {
  struct Want {
    const char* suffix;
    std::vector<int64_t> dims;
    const char* meaning;
  };
  const int64_t e = c.n_embd, q = c.q_dim(), kv = c.kv_dim(), ff = c.n_ff;
  if (absl::Status s = ExpectTensor(f, "token_embd.weight", {e, c.n_vocab}, "n_embd, n_vocab");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ExpectTensor(f, "output_norm.weight", {e}, "n_embd"); !s.ok()) return s;
  if (!c.tied_output) {
    if (absl::Status s = ExpectTensor(f, "output.weight", {e, c.n_vocab}, "n_embd, n_vocab");
        !s.ok()) {
      return s;
    }
  }
  if (c.rope_scaling.has_rope_freqs_tensor) {
    if (absl::Status s = ExpectTensor(f, "rope_freqs.weight", {c.n_rot / 2}, "n_rot / 2");
        !s.ok()) {
      return s;
    }
  }
  for (int64_t layer = 0; layer < c.n_layers; ++layer) {
    const Want wants[] = {
        {"attn_norm", {e}, "n_embd"},
        {"attn_q", {e, q}, "n_embd, n_heads * head_dim"},
        {"attn_k", {e, kv}, "n_embd, n_kv_heads * head_dim"},
        {"attn_v", {e, kv}, "n_embd, n_kv_heads * head_dim"},
        {"attn_output", {q, e}, "n_heads * head_dim, n_embd"},
        {"ffn_norm", {e}, "n_embd"},
        {"ffn_gate", {e, ff}, "n_embd, n_ff"},
        {"ffn_up", {e, ff}, "n_embd, n_ff"},
        {"ffn_down", {ff, e}, "n_ff, n_embd"},
    };
    for (const Want& w : wants) {
      const std::string name = absl::StrCat("blk.", layer, ".", w.suffix, ".weight");
      if (absl::Status s = ExpectTensor(f, name, w.dims, w.meaning); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> LoadModelConfig(const GgufFile& file) {
  absl::StatusOr<ModelConfig> c = ReadModelConfig(file);
  if (!c.ok()) return c.status();
  if (absl::Status s = ValidateModelTensors(*c, file); !s.ok()) return s;
  return c;
}

}  // namespace tessera
