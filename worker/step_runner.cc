#include "worker/step_runner.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<SamplingParams> SamplingParamsFromProto(const v1::SamplingParams& p,
                                                       uint32_t logprobs,
                                                       bool logprob_of_chosen) {
  SamplingParams s;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_repeat_last_n()) s.repeat_last_n = p.repeat_last_n();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_seed()) s.seed = p.seed();
  if (logprobs > static_cast<uint32_t>(SamplingParams::kMaxLogprobs)) {
    return absl::InvalidArgumentError(absl::StrCat("logprobs must be in [0, ",
                                                   SamplingParams::kMaxLogprobs, "], got ",
                                                   logprobs));
  }
  s.n_logprobs = static_cast<int32_t>(logprobs);
  s.logprobs = logprob_of_chosen || logprobs > 0;
  TESSERA_RETURN_IF_ERROR(s.Validate());
  return s;
}

absl::StatusOr<v1::StepResult> StepRunner::Run(const v1::Step& step) {
  auto fail = [&](absl::Status s) {
    return absl::Status(s.code(), absl::StrCat(name_, ", step ", step.step_id(), ": ",
                                               s.message()));
  };
  for (uint64_t id : step.free_seq_ids()) {
    engine_->Free(id);
    seqs_.erase(id);
  }

  if (step.inputs_size() == 0) {  // a free-only step: no forward pass, no collective
    v1::StepResult result;
    result.set_step_id(step.step_id());
    return result;
  }
  std::vector<StepInput> inputs(step.inputs_size());
  for (int i = 0; i < step.inputs_size(); ++i) {
    const v1::SeqInput& in = step.inputs(i);
    const int64_t held = engine_->Length(in.seq_id());
    if (static_cast<int64_t>(in.position()) != held) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "sequence ", in.seq_id(), " is at position ", in.position(),
          " for the coordinator but holds ", held, " tokens on this rank")));
    }
    if (in.position() == 0 && seqs_.count(in.seq_id()) == 0) {
      Seq seq;
      if (sampler_) {
        absl::StatusOr<SamplingParams> params =
            SamplingParamsFromProto(in.sampling().params(), in.sampling().logprobs(),
                                    in.sampling().logprob_of_chosen());
        if (!params.ok()) return fail(params.status());
        absl::StatusOr<Sampler> sampler =
            Sampler::Create(*params, static_cast<int32_t>(engine_->config().n_vocab));
        if (!sampler.ok()) return fail(sampler.status());
        seq.sampler.emplace(*std::move(sampler));
        seq.prompt_tokens = in.sampling().prompt_tokens();
      }
      seqs_.emplace(in.seq_id(), std::move(seq));
    } else if (seqs_.count(in.seq_id()) == 0) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat("sequence ", in.seq_id(), " is unknown on this rank")));
    }
    inputs[i].id = in.seq_id();
    inputs[i].tokens.assign(in.tokens().begin(), in.tokens().end());
    // Every rank asks for the same logits: on the last stage the vocab-parallel gather is a
    // collective of the whole tensor group, not only of the sampling rank.
    inputs[i].want_logits = in.sample();
  }

  absl::Status s = engine_->Step(inputs, &logits_);
  if (!s.ok()) {
    for (int i = 0; i < step.inputs_size(); ++i) {
      if (step.inputs(i).position() == 0) seqs_.erase(step.inputs(i).seq_id());
    }
    return fail(s);
  }

  v1::StepResult result;
  result.set_step_id(step.step_id());
  const int64_t n_vocab = engine_->config().n_vocab;
  int64_t row = 0;
  for (int i = 0; i < step.inputs_size(); ++i) {
    const v1::SeqInput& in = step.inputs(i);
    const std::vector<int32_t>& table = engine_->kv().BlockTable(in.seq_id());
    if (in.block_table_size() > 0 &&
        !std::equal(table.begin(), table.end(), in.block_table().begin(),
                    in.block_table().end())) {
      return fail(absl::InternalError(absl::StrCat(
          "sequence ", in.seq_id(), ": KV block table [", absl::StrJoin(table, ","),
          "] differs from the coordinator's [", absl::StrJoin(in.block_table(), ","), "]")));
    }
    Seq& seq = seqs_[in.seq_id()];
    if (!sampler_) continue;
    if (!seq.generating) {
      // Prompt tokens count for the repetition penalty only; tokens past prompt_tokens were
      // generated before a preemption and replay as generated.
      const std::vector<int32_t>& toks = inputs[i].tokens;
      const int64_t n = static_cast<int64_t>(toks.size());
      const int64_t n_prompt =
          seq.prompt_tokens == 0 ? n : std::clamp<int64_t>(seq.prompt_tokens - seq.fed, 0, n);
      absl::Status added =
          seq.sampler->AddPromptTokens(absl::Span<const int32_t>(toks.data(), n_prompt));
      for (int64_t k = n_prompt; added.ok() && k < n; ++k) {
        added = seq.sampler->ReplayGeneratedToken(toks[k]);
      }
      if (!added.ok()) return fail(added);
      seq.fed += n;
    }
    if (!in.sample()) continue;
    absl::Span<const float> row_logits(logits_.data() + row * n_vocab, n_vocab);
    ++row;
    absl::StatusOr<SampledToken> tok = seq.sampler->Sample(row_logits);
    if (!tok.ok()) {
      return fail(absl::Status(tok.status().code(), absl::StrCat("sequence ", in.seq_id(), ": ",
                                                                 tok.status().message())));
    }
    seq.generating = true;
    v1::SampledSequence* out = result.add_sampled();
    out->set_seq_id(in.seq_id());
    v1::Token* t = out->mutable_token();
    t->set_id(tok->id);
    if (seq.sampler->params().logprobs) t->set_logprob(tok->logprob);
    for (const TokenLogprob& alt : tok->top_logprobs) {
      v1::TokenLogprob* a = t->add_top_logprobs();
      a->set_id(alt.id);
      a->set_logprob(alt.logprob);
    }
  }
  return result;
}

}  // namespace tessera
