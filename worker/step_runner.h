// StepRunner: applies the coordinator's Steps (worker.proto) to one rank's Engine. Every rank of
// a replica group runs one; the worker process feeds it from its Attach stream, and the
// coordinator's LocalExecutor feeds it directly in-process.
//
// Per step: free the listed sequences; check each input against this rank's cache (its position
// equals the tokens the sequence holds, and after the run its block table equals the one the
// coordinator expects: a rank that disagrees fails the step instead of attending to the wrong
// blocks); run the batch through the engine; on the sampling rank, sample one token for each
// input that asks, with that sequence's own sampler (created from the SequenceSampling of its
// first input, fed the prompt tokens for the repetition penalty; a sequence recomputed after a
// preemption replays the tokens it had generated, see SequenceSampling.prompt_tokens).
//
// Thread-safety: one thread at a time, like the engine.
#ifndef TESSERA_WORKER_STEP_RUNNER_H_
#define TESSERA_WORKER_STEP_RUNNER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "model/engine.h"
#include "model/sampler.h"
#include "tessera/v1/worker.pb.h"

namespace tessera {

// The sampler's parameters from their wire form (unset fields keep SamplingParams' defaults),
// validated: InvalidArgument naming the field and value. `logprobs` is the number of top
// alternatives (0..SamplingParams::kMaxLogprobs).
absl::StatusOr<SamplingParams> SamplingParamsFromProto(const v1::SamplingParams& p,
                                                       uint32_t logprobs,
                                                       bool logprob_of_chosen);

class StepRunner {
 public:
  // `engine` must outlive the runner. `sampler`: this rank samples (last stage, tp_rank 0).
  // `name` prefixes errors, e.g. "worker w3 (replica 0, rank 2)".
  StepRunner(Engine* engine, bool sampler, std::string name)
      : engine_(engine), sampler_(sampler), name_(std::move(name)) {}

  // Runs one step. The result carries step_id and, on the sampling rank, one SampledSequence
  // per input with sample set, in input order. Errors name this rank and the sequence; after an
  // error the caller treats the group as broken (other ranks may have moved on).
  absl::StatusOr<v1::StepResult> Run(const v1::Step& step);

  // Sequences this rank holds.
  int64_t n_sequences() const { return static_cast<int64_t>(seqs_.size()); }

 private:
  struct Seq {
    std::optional<Sampler> sampler;  // on the sampling rank
    bool generating = false;         // has sampled a token: later inputs are its own tokens
    int64_t prompt_tokens = 0;       // SequenceSampling.prompt_tokens (0: all until sampling)
    int64_t fed = 0;                 // tokens fed to the sampler so far
  };
  Engine* engine_;
  bool sampler_;
  std::string name_;
  std::unordered_map<SeqId, Seq> seqs_;
  std::vector<float> logits_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_STEP_RUNNER_H_
