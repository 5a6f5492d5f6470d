// Token sampling: turns one row of logits over the vocabulary into the next token id, with the
// per-request knobs of the public API (temperature, top-k, top-p, min-p, penalties, seed,
// logprobs).
//
// Order of operations (the order of HF transformers' and vLLM's samplers, so truncation acts on
// the distribution that is actually drawn from, and top-p's mass is measured after temperature):
//   1. penalties on the logits: repetition (llama.cpp / HF: a positive logit is divided by R, a
//      negative one multiplied by R, once per distinct token in the last `repeat_last_n`
//      tokens of prompt + output), then frequency and presence (OpenAI: logit -= count *
//      frequency_penalty + (count > 0) * presence_penalty, count = occurrences among the
//      generated tokens only, as in vLLM);
//   2. temperature 0: greedy, the argmax of the penalized logits (ties: lowest id); no random
//      number is drawn and steps 3-7 do not apply;
//   3. temperature: p_i proportional to exp(logit_i / T);
//   4. top-k: keep the k most probable tokens (ties broken by lowest id);
//   5. top-p: keep the smallest set of most probable tokens (same order) whose probability,
//      renormalized after top-k, sums to >= top_p;
//   6. min-p: keep tokens with p_i >= min_p * max_j p_j (ratios do not change under
//      renormalization, so its place after top-p is immaterial);
//   7. draw: one uniform u in [0, 1) from the sequence's xoshiro256** stream; the token is the
//      first kept token, in ascending id order, at which the cumulative kept weight exceeds
//      u * (total kept weight). Exactly one draw per non-greedy token, so the stream position
//      is the number of tokens sampled.
// The most probable token always survives 4-6, so there is always a candidate.
//
// Logprobs: `logprob` and `top_logprobs` are log-softmax of the RAW logits as given to
// Sample(), before penalties, temperature and truncation (what OpenAI and vLLM report by
// default): they describe the model, are comparable across sampling settings, and are finite
// for every token that can be chosen. Computed in double, returned as float.
//
// Reproducibility: the RNG stream is platform-independent (model/rng.h); all probabilities are
// computed in double with std::exp, so the same seed, logits and history give the same tokens
// wherever libm's exp rounds the same way (in practice: everywhere but at exact ties of the
// cumulative sum).
//
// Cost per token over a vocabulary of V: greedy without logprobs is ScanLogits (validate and
// find the maximum in vector registers, then the first index holding it); top-k selects with a
// bounded heap (O(V), no sort); top-p without top-k bins tokens by log-weight and sorts only
// the bin where the cumulative mass crosses top_p; otherwise one exp pass and the draw.
// Logprobs add one exp pass. No full sort of the vocabulary anywhere.
//
// Thread-safety: a Sampler is not thread-safe; use one per sequence. Distinct Samplers may be
// used concurrently (scratch buffers are thread-local).
#ifndef TESSERA_MODEL_SAMPLER_H_
#define TESSERA_MODEL_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/rng.h"

namespace tessera {

// Per-request sampling knobs. Defaults sample from the model's distribution unchanged
// (temperature 1, no truncation, no penalties).
struct SamplingParams {
  static constexpr int kMaxLogprobs = 20;

  float temperature = 1.0f;         // >= 0, finite; 0 = greedy
  int32_t top_k = 0;                // >= 0; 0 = off
  float top_p = 1.0f;               // in (0, 1]; 1 = off
  float min_p = 0.0f;               // in [0, 1]; 0 = off
  float repetition_penalty = 1.0f;  // > 0, finite; 1 = off
  int32_t repeat_last_n = 64;       // window of the repetition penalty; -1 = all, 0 = off
  float frequency_penalty = 0.0f;   // in [-2, 2] (OpenAI's range); 0 = off
  float presence_penalty = 0.0f;    // in [-2, 2]; 0 = off
  uint64_t seed = 0;
  bool logprobs = false;   // fill SampledToken::logprob (implied by n_logprobs > 0)
  int32_t n_logprobs = 0;  // 0..kMaxLogprobs most likely alternatives to return

  // InvalidArgument naming the parameter and its value for anything out of range or NaN.
  // Nothing is clamped.
  absl::Status Validate() const;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;  // log-softmax of the raw logits
};

struct SampledToken {
  int32_t id = 0;
  // Log-probability of `id` under the raw logits; NaN unless logprobs were requested.
  float logprob = 0.0f;
  // The n_logprobs most likely tokens under the raw logits, most likely first (ties: lowest id
  // first); may or may not contain `id`.
  std::vector<TokenLogprob> top_logprobs;
};

// The greedy choice over a row of logits: the largest value and its index (the lowest of equal
// ones; -1 when the row is empty or every value is -inf), and the index of the first NaN or
// +inf (-1 if none; max and argmax are then meaningless). Vectorized (AVX-512, AVX2 or SSE
// clones), with the answers of the obvious loop: 49,152 logits (SmolLM2) in ~5 us against
// ~37 us for std::max_element (-O3, Zen 4), per sequence and step.
struct LogitScan {
  float max = 0.0f;
  int64_t argmax = -1;
  int64_t first_bad = -1;
};
LogitScan ScanLogits(absl::Span<const float> logits);

class Sampler {
 public:
  // Validates `params`; vocab_size is the length of every logits row.
  static absl::StatusOr<Sampler> Create(const SamplingParams& params, int32_t vocab_size);

  const SamplingParams& params() const { return params_; }
  int32_t vocab_size() const { return vocab_size_; }

  // Appends prompt tokens to the history (they count for the repetition penalty only).
  // InvalidArgument, changing nothing, if an id is outside [0, vocab_size).
  absl::Status AddPromptTokens(absl::Span<const int32_t> tokens);

  // Records a generated token chosen elsewhere (for example forced): it enters the history and
  // the frequency/presence counts exactly as a sampled token would.
  absl::Status AddGeneratedToken(int32_t id);

  // Records a token this sampler generated before its state was lost (a sequence recomputed
  // after preemption): like AddGeneratedToken, and it also consumes the random draw Sample()
  // made for it, so later samples are the ones an uninterrupted run would draw.
  absl::Status ReplayGeneratedToken(int32_t id);

  // Picks the next token from `logits` (length vocab_size) and records it as generated.
  // InvalidArgument if the length is wrong, a logit is NaN or +inf, or every logit is -inf.
  // -inf logits are allowed and mean "never pick this token".
  absl::StatusOr<SampledToken> Sample(absl::Span<const float> logits);

 private:
  Sampler(const SamplingParams& params, int32_t vocab_size, uint64_t seed)
      : params_(params), vocab_size_(vocab_size), rng_(seed) {}

  void PushHistory(int32_t id);
  bool HasPenalties() const;
  // Writes the penalized logits into `out` (a copy of `logits` with history tokens adjusted).
  void ApplyPenalties(absl::Span<const float> logits, std::vector<float>& out) const;
  // Steps 3-7 on penalized logits whose maximum is `max_logit`; draws one random number.
  int32_t Draw(absl::Span<const float> logits, float max_logit);

  SamplingParams params_;
  int32_t vocab_size_;
  Xoshiro256StarStar rng_;
  std::vector<int32_t> history_;  // prompt then generated ids
  int64_t window_start_ = 0;      // history_[window_start_..] is the repetition window
  absl::flat_hash_map<int32_t, int32_t> window_counts_;     // id -> occurrences in the window
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;  // id -> times generated
};

}  // namespace tessera

#endif  // TESSERA_MODEL_SAMPLER_H_
