#include "model/llama.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

ModelShard ModelShard::Whole(const ModelConfig& c) {
  ModelShard s;
  s.layer_end = c.n_layers;
  s.kv_head_end = c.n_kv_heads;
  s.ff_end = c.n_ff;
  s.vocab_end = c.n_vocab;
  return s;
}

absl::Status ModelShard::Validate(const ModelConfig& c) const {
  auto check = [](const char* what, int64_t begin, int64_t end, int64_t limit) -> absl::Status {
    if (begin < 0 || begin >= end || end > limit) {
      return absl::InvalidArgumentError(absl::StrCat("shard ", what, " range [", begin, ", ", end,
                                                     ") is empty or outside [0, ", limit, ")"));
    }
    return absl::OkStatus();
  };
  absl::Status s = check("layer", layer_begin, layer_end, c.n_layers);
  if (s.ok()) s = check("KV head", kv_head_begin, kv_head_end, c.n_kv_heads);
  if (s.ok()) s = check("FFN", ff_begin, ff_end, c.n_ff);
  if (s.ok()) s = check("vocab", vocab_begin, vocab_end, c.n_vocab);
  return s;
}

absl::Status ShardHooks::GatherLogits(const float* local, int64_t n_rows, int64_t local_vocab,
                                      int64_t n_vocab, float* full) {
  if (local_vocab != n_vocab) {
    return absl::FailedPreconditionError(
        "a vocab-parallel shard needs the cluster's GatherLogits hook");
  }
  std::memcpy(full, local, static_cast<size_t>(n_rows * n_vocab) * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(
    const WeightSource& weights, const ModelShard& shard, Backend* backend, ShardHooks* hooks,
    int64_t kv_blocks, int kv_block_tokens, KvType kv_type) {
  const ModelConfig& c = weights.config();
  if (absl::Status s = shard.Validate(c); !s.ok()) return s;
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel(c, shard, backend, hooks));
  if (model->hooks_ == nullptr) model->hooks_ = &model->default_hooks_;
  if (absl::Status s = model->Load(weights); !s.ok()) return s;
  KvLayout kv;
  kv.n_layers = static_cast<int>(shard.layer_end - shard.layer_begin);
  kv.n_kv_heads = static_cast<int>(model->n_kv_heads_);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_tokens = kv_block_tokens;
  model->kv_block_tokens_ = kv_block_tokens;
  kv.n_blocks = kv_blocks;
  kv.type = kv_type;
  model->kv_type_ = kv_type;
  if (absl::Status s = backend->AllocateKvCache(kv); !s.ok()) return s;
  return model;
}

absl::Status LlamaModel::Load(const WeightSource& weights) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim;
  n_kv_heads_ = shard_.kv_head_end - shard_.kv_head_begin;
  n_heads_ = n_kv_heads_ * c.n_gqa();
  n_ff_ = shard_.ff_end - shard_.ff_begin;
  n_vocab_local_ = shard_.vocab_end - shard_.vocab_begin;
  const int64_t q_row0 = shard_.kv_head_begin * c.n_gqa() * hd;
  const int64_t kv_row0 = shard_.kv_head_begin * hd;

  // Loads rows [r0, r0 + rows) x cols [c0, c0 + cols) of a tensor; errors name the tensor.
  auto load = [&](const std::string& name, int64_t r0, int64_t rows, int64_t c0,
                  int64_t cols) -> absl::StatusOr<std::unique_ptr<Weight>> {
    absl::StatusOr<QuantMatrix> m = weights.Matrix(name);
    if (!m.ok()) return m.status();
    if (rows < 0) rows = m->rows;
    if (cols < 0) cols = m->cols;
    absl::StatusOr<QuantMatrix> slice = SliceMatrix(*m, r0, rows, c0, cols);
    if (!slice.ok()) {
      return absl::Status(slice.status().code(),
                          absl::StrCat(weights.description(), ": tensor '", name, "': ",
                                       slice.status().message()));
    }
    absl::StatusOr<std::unique_ptr<Weight>> w = backend_->LoadWeight(*slice);
    if (w.ok()) {
      const QuantTraits* t = FindQuantTraits(slice->type);
      weight_bytes_ += slice->rows * (slice->cols / t->block_elems) * t->block_bytes;
    }
    return w;
  };
  if (shard_.first_stage()) {
    TESSERA_ASSIGN_OR_RETURN(token_embd_, load("token_embd.weight", 0, -1, 0, -1));
  }
  if (shard_.last_stage(c)) {
    TESSERA_ASSIGN_OR_RETURN(output_norm_, load("output_norm.weight", 0, -1, 0, -1));
    const char* out_name = c.tied_output ? "token_embd.weight" : "output.weight";
    TESSERA_ASSIGN_OR_RETURN(output_, load(out_name, shard_.vocab_begin, n_vocab_local_, 0, -1));
  }
  if (token_embd_ != nullptr) {
    // The embedding is a lookup of n_tokens rows, not a stream of the whole table.
    const QuantMatrix& m = token_embd_->matrix();
    const QuantTraits* t = FindQuantTraits(m.type);
    weight_bytes_ -= m.rows * (m.cols / t->block_elems) * t->block_bytes;
  }
  for (int64_t l = shard_.layer_begin; l < shard_.layer_end; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    Layer layer;
    TESSERA_ASSIGN_OR_RETURN(layer.attn_norm, load(p + "attn_norm.weight", 0, -1, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.wq, load(p + "attn_q.weight", q_row0, n_heads_ * hd, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.wk, load(p + "attn_k.weight", kv_row0, n_kv_heads_ * hd, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.wv, load(p + "attn_v.weight", kv_row0, n_kv_heads_ * hd, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.wo, load(p + "attn_output.weight", 0, -1, q_row0, n_heads_ * hd));
    TESSERA_ASSIGN_OR_RETURN(layer.ffn_norm, load(p + "ffn_norm.weight", 0, -1, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.w_gate, load(p + "ffn_gate.weight", shard_.ff_begin, n_ff_, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.w_up, load(p + "ffn_up.weight", shard_.ff_begin, n_ff_, 0, -1));
    TESSERA_ASSIGN_OR_RETURN(layer.w_down, load(p + "ffn_down.weight", 0, -1, shard_.ff_begin, n_ff_));
    layers_.push_back(std::move(layer));
  }

  rope_.head_dim = static_cast<int>(hd);
  rope_.rope_dims = static_cast<int>(c.n_rot);
  rope_.freq_base = c.rope_freq_base;
  const RopeScaling& rs = c.rope_scaling;
  if (rs.has_rope_freqs_tensor) {
    // The file's own per-pair divisors (llama3 scaling precomputed by the converter).
    absl::StatusOr<QuantMatrix> f = weights.Matrix("rope_freqs.weight");
    if (!f.ok()) return f.status();
    if (f->type != GgmlType::kF32 || f->rows * f->cols != c.n_rot / 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          weights.description(), ": rope_freqs.weight must be ", c.n_rot / 2, " F32 values"));
    }
    const float* v = static_cast<const float*>(f->data);
    rope_.freq_factors.assign(v, v + c.n_rot / 2);
  } else if (rs.type == "llama3") {
    rope_.scaling_factor = rs.factor;
    rope_.low_freq_factor = rs.low_freq_factor;
    rope_.high_freq_factor = rs.high_freq_factor;
    rope_.original_context = static_cast<int>(rs.original_context_length);
  } else if (rs.type == "linear") {
    rope_.freq_factors.assign(static_cast<size_t>(c.n_rot / 2), rs.factor);
  } else if (rs.type != "none" && !rs.type.empty()) {
    return absl::UnimplementedError(absl::StrCat(weights.description(), ": RoPE scaling '",
                                                 rs.type, "' is not supported"));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::EnsureBuffers(int64_t n_tokens, int64_t n_logit_rows) {
  auto grow = [&](std::unique_ptr<DeviceBuffer>* buf, int64_t n) -> absl::Status {
    if (*buf != nullptr && (*buf)->n_floats() >= n) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<DeviceBuffer>> b = backend_->Allocate(n);
    if (!b.ok()) return b.status();
    *buf = *std::move(b);
    return absl::OkStatus();
  };
  const ModelConfig& c = config_;
  const int64_t T = n_tokens;
  const int64_t hd = c.head_dim;
  if (T > capacity_tokens_) {
    for (auto [buf, width] : {std::pair{&x_, c.n_embd}, {&h_, c.n_embd}, {&proj_, c.n_embd},
                              {&q_, n_heads_ * hd}, {&att_, n_heads_ * hd},
                              {&k_, n_kv_heads_ * hd}, {&v_, n_kv_heads_ * hd},
                              {&gate_, n_ff_}, {&up_, n_ff_}}) {
      if (absl::Status s = grow(buf, T * width); !s.ok()) return s;
    }
    capacity_tokens_ = T;
  }
  if (n_logit_rows > capacity_logit_rows_) {
    if (absl::Status s = grow(&sel_, n_logit_rows * c.n_embd); !s.ok()) return s;
    if (!OutputWritesCallerLogits()) {
      if (absl::Status s = grow(&logits_, n_logit_rows * n_vocab_local_); !s.ok()) return s;
    }
    capacity_logit_rows_ = n_logit_rows;
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(const std::vector<SequenceStep>& batch,
                                 std::vector<float>* logits) {
  const ModelConfig& c = config_;
  AttentionBatch ab;
  std::vector<int32_t> ids;
  std::vector<int32_t> logit_rows;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceStep& step = batch[s];
    if (step.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " has no tokens"));
    }
    if (step.block_table == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " has no block table"));
    }
    if (step.start_pos < 0 ||
        step.start_pos + static_cast<int64_t>(step.tokens.size()) > c.n_ctx) {
      return absl::OutOfRangeError(absl::StrCat(
          "batch entry ", s, ": positions [", step.start_pos, ", ",
          step.start_pos + step.tokens.size(), ") exceed the context length ", c.n_ctx));
    }
    ab.block_table.push_back(*step.block_table);
    for (size_t i = 0; i < step.tokens.size(); ++i) {
      const int32_t pos = step.start_pos + static_cast<int32_t>(i);
      ab.seq_of_token.push_back(static_cast<int32_t>(s));
      ab.position.push_back(pos);
      ids.push_back(step.tokens[i]);
    }
    if (step.want_logits) logit_rows.push_back(static_cast<int32_t>(ids.size() - 1));
  }
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T == 0) return absl::OkStatus();
  // Each token's own KV slot: block table entry for its position, then offset in the block.
  ab.slot_of_token.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t>& table = ab.block_table[ab.seq_of_token[t]];
    const int64_t bt = kv_block_tokens_;
    const int64_t blk = ab.position[t] / bt;
    if (blk >= static_cast<int64_t>(table.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch entry ", ab.seq_of_token[t], ": position ", ab.position[t],
          " has no KV block reserved (", table.size(), " blocks of ", bt, " tokens)"));
    }
    ab.slot_of_token[t] = int64_t{table[blk]} * bt + ab.position[t] % bt;
  }
  if (absl::Status s = EnsureBuffers(T, static_cast<int64_t>(logit_rows.size())); !s.ok()) {
    return s;
  }

  float* x = x_->data();
  float* h = h_->data();
  float* q = q_->data();
  float* k = k_->data();
  float* v = v_->data();
  float* att = att_->data();
  float* proj = proj_->data();
  float* gate = gate_->data();
  float* up = up_->data();
  const int32_t* pos = ab.position.data();
  const float eps = c.rms_norm_eps;

  if (shard_.first_stage()) {
    TESSERA_RETURN_IF_ERROR(backend_->Embed(*token_embd_, ids.data(), T, x));
  } else {
    TESSERA_RETURN_IF_ERROR(hooks_->ReceiveHidden(x, T * c.n_embd));
  }
  // The FFN output the residual stream x has still to add: each layer's attention norm adds
  // the previous layer's (AddRmsNormMatMuls), and the last one is added after the layers.
  const float* residual = nullptr;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    // Attention block.
    const Backend::MatMulOut qkv[] = {{L.wq.get(), q}, {L.wk.get(), k}, {L.wv.get(), v}};
    TESSERA_RETURN_IF_ERROR(
        backend_->AddRmsNormMatMuls(x, residual, *L.attn_norm, T, eps, h, qkv, 3));
    TESSERA_RETURN_IF_ERROR(backend_->Rope(q, T, static_cast<int>(n_heads_), pos, rope_));
    TESSERA_RETURN_IF_ERROR(backend_->Rope(k, T, static_cast<int>(n_kv_heads_), pos, rope_));
    TESSERA_RETURN_IF_ERROR(
        backend_->Attention(static_cast<int>(i), q, k, v, static_cast<int>(n_heads_), ab, att));
    TESSERA_RETURN_IF_ERROR(backend_->MatMul(*L.wo, att, T, proj));
    TESSERA_RETURN_IF_ERROR(hooks_->AllReduceSum(proj, T * c.n_embd));
    // Feed-forward block (x += proj first, in the norm's pass).
    const Backend::MatMulOut gate_up[] = {{L.w_gate.get(), gate}, {L.w_up.get(), up}};
    TESSERA_RETURN_IF_ERROR(
        backend_->AddRmsNormMatMuls(x, proj, *L.ffn_norm, T, eps, h, gate_up, 2));
    TESSERA_RETURN_IF_ERROR(backend_->SwiGluMatMul(*L.w_down, gate, up, T, proj));
    TESSERA_RETURN_IF_ERROR(hooks_->AllReduceSum(proj, T * c.n_embd));
    residual = proj;  // added to x by the next layer's norm, or below
  }
  if (residual != nullptr) TESSERA_RETURN_IF_ERROR(backend_->Add(x, residual, T * c.n_embd));
  if (!shard_.last_stage(c)) return hooks_->SendHidden(x, T * c.n_embd);

  const int64_t S = static_cast<int64_t>(logit_rows.size());
  if (S == 0) return absl::OkStatus();
  float* sel = sel_->data();
  TESSERA_RETURN_IF_ERROR(backend_->GatherRows(x, logit_rows.data(), S, c.n_embd, sel));
  TESSERA_RETURN_IF_ERROR(backend_->RmsNorm(sel, *output_norm_, S, eps, sel));
  logits->resize(static_cast<size_t>(S * c.n_vocab));
  // The caller's buffer directly where it can be (16 sequences of SmolLM2 are 3 MiB a step,
  // copied twice otherwise).
  if (OutputWritesCallerLogits()) {
    return backend_->MatMul(*output_, sel, S, logits->data());
  }
  TESSERA_RETURN_IF_ERROR(backend_->MatMul(*output_, sel, S, logits_->data()));
  if (LogitsToCaller()) return backend_->CopyToHost(logits_->data(), S * c.n_vocab, logits->data());
  host_logits_.resize(static_cast<size_t>(S * n_vocab_local_));
  TESSERA_RETURN_IF_ERROR(
      backend_->CopyToHost(logits_->data(), S * n_vocab_local_, host_logits_.data()));
  return hooks_->GatherLogits(host_logits_.data(), S, n_vocab_local_, c.n_vocab, logits->data());
}

}  // namespace tessera
