#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

constexpr float kMaxFloat = std::numeric_limits<float>::max();
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

absl::Status BadParam(const char* name, double value, const char* want) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling parameter ", name, "=", value, " is invalid: ", want));
}

// A token's place in the sampling order.
struct Key {
  float logit;
  int32_t id;
};

// Sampling order: higher logit first, equal logits by lower id. Every ordering in this file
// uses it, so results never depend on how a sort happened to permute equal keys.
bool Before(const Key& a, const Key& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// The first n tokens of `logits` in sampling order, sorted, into `out`. A bounded heap whose
// root is the worst token kept: O(V) comparisons when n is small (most tokens lose against the
// root at once), O(V log n) at worst.
void TopN(absl::Span<const float> logits, size_t n, std::vector<Key>& out) {
  out.clear();
  n = std::min(n, logits.size());
  if (n == 0) return;
  out.reserve(n);
  if (n * 4 >= logits.size()) {  // a large fraction: select, then sort the selection
    for (size_t i = 0; i < logits.size(); ++i) out.push_back({logits[i], int32_t(i)});
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n - 1), out.end(),
                     Before);
    out.resize(n);
    std::sort(out.begin(), out.end(), Before);
    return;
  }
  for (size_t i = 0; i < n; ++i) out.push_back({logits[i], int32_t(i)});
  std::make_heap(out.begin(), out.end(), Before);  // front() = last in sampling order
  for (size_t i = n; i < logits.size(); ++i) {
    const Key k{logits[i], int32_t(i)};
    if (Before(k, out.front())) {
      std::pop_heap(out.begin(), out.end(), Before);
      out.back() = k;
      std::push_heap(out.begin(), out.end(), Before);
    }
  }
  std::sort_heap(out.begin(), out.end(), Before);
}

// Per-thread scratch, so Samplers stay small (one per sequence) and Sample() does not allocate
// in steady state.
struct Scratch {
  std::vector<float> penalized;                  // (vocab) logits after penalties
  std::vector<double> weights;                   // (vocab) kept weight per token, 0 if dropped
  std::vector<Key> candidates;                   // sorted candidates of top-k / top-p
  std::vector<std::pair<int32_t, double>> kept;  // (id, weight) of kept candidates
  std::vector<double> bin_mass;                  // top-p: probability mass per z bin
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The last token of the nucleus in the sampling order, without sorting the vocabulary: tokens
// go into bins of width 1/8 in z = (l - l_max) / T (monotone in the logit, so bins are runs of
// the sampling order); one pass finds the bin where the cumulative mass crosses top_p, and only
// that bin's tokens are sorted.
Key NucleusCutoff(absl::Span<const float> logits, absl::Span<const double> w, double z,
                  float max_logit, double temperature, double top_p) {
  constexpr int kBinsPerUnit = 8;
  constexpr int kBins = 64 * kBinsPerUnit + 1;  // z in [-64, 0]; the last bin holds the rest
  Scratch& scratch = ThreadScratch();
  const double inv_t = 1.0 / temperature;
  const double max_l = max_logit;
  auto bin_of = [&](float l) {
    const double scaled = (max_l - double(l)) * inv_t * kBinsPerUnit;  // >= 0, may be +inf
    return scaled < kBins - 1 ? static_cast<int>(scaled) : kBins - 1;
  };
  std::vector<double>& mass = scratch.bin_mass;
  mass.assign(kBins, 0.0);
  for (size_t i = 0; i < logits.size(); ++i) mass[static_cast<size_t>(bin_of(logits[i]))] += w[i];

  double cumulative = 0.0;
  int crossing = -1;
  for (int b = 0; b < kBins; ++b) {
    if ((cumulative + mass[static_cast<size_t>(b)]) / z >= top_p) {
      crossing = b;
      break;
    }
    cumulative += mass[static_cast<size_t>(b)];
  }
  const Key keep_all{-std::numeric_limits<float>::infinity(), std::numeric_limits<int32_t>::max()};
  if (crossing < 0) return keep_all;  // rounding kept the total just under top_p

  std::vector<Key>& bin = scratch.candidates;
  bin.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (bin_of(logits[i]) == crossing) bin.push_back({logits[i], static_cast<int32_t>(i)});
  }
  std::sort(bin.begin(), bin.end(), Before);
  for (const Key& k : bin) {
    cumulative += w[static_cast<size_t>(k.id)];
    if (cumulative / z >= top_p) return k;
  }
  return bin.back();  // the bin's own sum rounded differently from its tokens' running sum
}

constexpr int kScanLanes = 16;
// GCC vector types (split into AVX2 or SSE registers by the clones without AVX-512).
typedef float FloatLanes __attribute__((vector_size(4 * kScanLanes)));
typedef int32_t IntLanes __attribute__((vector_size(4 * kScanLanes)));
typedef uint64_t WordLanes __attribute__((vector_size(4 * kScanLanes)));

// (By pointer and inlined: a 64-byte vector passed by value would change the ABI between the
// clones.)
inline __attribute__((always_inline)) void LoadLanes(const float* v, FloatLanes* x) {
  std::memcpy(x, v, sizeof *x);
}

inline __attribute__((always_inline)) bool AnyLane(const IntLanes* mask) {
  WordLanes w;
  std::memcpy(&w, mask, sizeof w);
  uint64_t any = 0;
  for (int j = 0; j < kScanLanes / 2; ++j) any |= w[j];
  return any != 0;
}

// The largest of v[0, n) (-inf if none) and whether any is NaN or +inf: per lane the larger of
// its elements (the first of equal ones, which compare equal: +0 and -0 too), then across lanes.
__attribute__((target_clones("avx512f", "avx2", "default"))) float MaxOfRow(const float* v,
                                                                              int64_t n,
                                                                              bool* bad) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  FloatLanes m = neg_inf - FloatLanes{};
  IntLanes b = {};
  int64_t i = 0;
  for (; i + kScanLanes <= n; i += kScanLanes) {
    FloatLanes x;
    LoadLanes(v + i, &x);
    m = x > m ? x : m;
    b |= ~(x <= kMaxFloat);
  }
  float max = neg_inf;
  bool any_bad = AnyLane(&b);
  for (int j = 0; j < kScanLanes; ++j) max = m[j] > max ? m[j] : max;
  for (; i < n; ++i) {
    max = v[i] > max ? v[i] : max;
    any_bad = any_bad || !(v[i] <= kMaxFloat);
  }
  *bad = any_bad;
  return max;
}

// The first i with v[i] == x, or -1: a vector compare per 16 elements, then one by one in the
// group that has it.
__attribute__((target_clones("avx512f", "avx2", "default"))) int64_t FirstEqual(const float* v,
                                                                                int64_t n,
                                                                                float x) {
  const FloatLanes target = x - FloatLanes{};
  int64_t i = 0;
  for (; i + kScanLanes <= n; i += kScanLanes) {
    FloatLanes x;
    LoadLanes(v + i, &x);
    const IntLanes equal = x == target;
    if (AnyLane(&equal)) break;
  }
  for (; i < n; ++i) {
    if (v[i] == x) return i;
  }
  return -1;
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return BadParam("temperature", temperature, "must be a finite number >= 0 (0 = greedy)");
  }
  if (top_k < 0) return BadParam("top_k", top_k, "must be >= 0 (0 = off)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return BadParam("top_p", top_p, "must be in (0, 1] (1 = off)");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return BadParam("min_p", min_p, "must be in [0, 1] (0 = off)");
  }
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return BadParam("repetition_penalty", repetition_penalty,
                    "must be a finite number > 0 (1 = off)");
  }
  if (repeat_last_n < -1) {
    return BadParam("repeat_last_n", repeat_last_n, "must be >= -1 (-1 = all tokens, 0 = off)");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return BadParam("frequency_penalty", frequency_penalty, "must be in [-2, 2] (0 = off)");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return BadParam("presence_penalty", presence_penalty, "must be in [-2, 2] (0 = off)");
  }
  if (n_logprobs < 0 || n_logprobs > kMaxLogprobs) {
    return BadParam("n_logprobs", n_logprobs, "must be in 0..20");
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params, int32_t vocab_size) {
  if (absl::Status s = params.Validate(); !s.ok()) return s;
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler: vocab_size=", vocab_size, " must be > 0"));
  }
  return Sampler(params, vocab_size, params.seed);
}

absl::Status Sampler::AddPromptTokens(absl::Span<const int32_t> tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat("sampler: prompt token ", i, " has id ",
                                                     tokens[i], ", outside the vocabulary [0, ",
                                                     vocab_size_, ")"));
    }
  }
  for (int32_t id : tokens) PushHistory(id);
  return absl::OkStatus();
}

absl::Status Sampler::AddGeneratedToken(int32_t id) {
  if (id < 0 || id >= vocab_size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler: generated token id ", id, " is outside the vocabulary [0, ", vocab_size_, ")"));
  }
  ++generated_counts_[id];
  PushHistory(id);
  return absl::OkStatus();
}

void Sampler::PushHistory(int32_t id) {
  history_.push_back(id);
  if (params_.repeat_last_n == 0 || params_.repetition_penalty == 1.0f) return;
  ++window_counts_[id];
  if (params_.repeat_last_n > 0 &&
      static_cast<int64_t>(history_.size()) - window_start_ > params_.repeat_last_n) {
    const int32_t old = history_[static_cast<size_t>(window_start_++)];
    auto it = window_counts_.find(old);
    if (--it->second == 0) window_counts_.erase(it);
  }
}

bool Sampler::HasPenalties() const {
  return (params_.repetition_penalty != 1.0f && !window_counts_.empty()) ||
         ((params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) &&
          !generated_counts_.empty());
}

void Sampler::ApplyPenalties(absl::Span<const float> logits, std::vector<float>& out) const {
  out.assign(logits.begin(), logits.end());
  // Each token is adjusted independently, so the (unspecified) iteration order of the maps
  // does not matter. Arithmetic in double; a finite logit stays finite (saturating at the
  // float range) so no +inf can reach the softmax.
  auto store = [&out](int32_t id, double v) {
    if (std::isfinite(out[static_cast<size_t>(id)])) {
      v = std::clamp(v, -double(kMaxFloat), double(kMaxFloat));
    }
    out[static_cast<size_t>(id)] = static_cast<float>(v);
  };
  if (params_.repetition_penalty != 1.0f) {
    const double r = params_.repetition_penalty;
    for (const auto& [id, count] : window_counts_) {
      const double v = out[static_cast<size_t>(id)];
      store(id, v > 0.0 ? v / r : v * r);
    }
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    for (const auto& [id, count] : generated_counts_) {
      const double v = out[static_cast<size_t>(id)];
      store(id, v - count * double(params_.frequency_penalty) - double(params_.presence_penalty));
    }
  }
}

absl::Status Sampler::ReplayGeneratedToken(int32_t id) {
  absl::Status added = AddGeneratedToken(id);
  if (!added.ok()) return added;
  if (params_.temperature != 0.0f) rng_.NextDouble();  // Draw() takes exactly one per sample
  return absl::OkStatus();
}

LogitScan ScanLogits(absl::Span<const float> logits) {
  const auto n = static_cast<int64_t>(logits.size());
  LogitScan scan;
  bool bad = false;
  scan.max = MaxOfRow(logits.data(), n, &bad);
  if (bad) {
    for (int64_t i = 0; i < n; ++i) {
      if (!(logits[i] <= kMaxFloat)) {
        scan.first_bad = i;
        break;
      }
    }
    return scan;
  }
  if (scan.max > -std::numeric_limits<float>::infinity()) {
    scan.argmax = FirstEqual(logits.data(), n, scan.max);
  }
  return scan;
}

absl::StatusOr<SampledToken> Sampler::Sample(absl::Span<const float> raw) {
  if (raw.size() != static_cast<size_t>(vocab_size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler: got ", raw.size(), " logits, expected vocab_size=", vocab_size_));
  }
  // One pass: reject NaN / +inf (a model bug; they would poison the softmax) and find the max.
  const LogitScan raw_scan = ScanLogits(raw);
  if (raw_scan.first_bad >= 0) {
    const float v = raw[static_cast<size_t>(raw_scan.first_bad)];
    return absl::InvalidArgumentError(absl::StrCat("sampler: logit of token ", raw_scan.first_bad,
                                                   " is ", std::isnan(v) ? "NaN" : "+inf"));
  }
  if (raw_scan.argmax < 0) {
    return absl::InvalidArgumentError("sampler: every logit is -inf, no token can be chosen");
  }
  const float raw_max = raw_scan.max;

  Scratch& scratch = ThreadScratch();
  absl::Span<const float> logits = raw;
  float max_logit = raw_max;
  auto argmax = static_cast<int32_t>(raw_scan.argmax);
  if (HasPenalties()) {
    ApplyPenalties(raw, scratch.penalized);
    logits = scratch.penalized;
    // Penalties keep every logit finite or -inf (and the maximum's token finite).
    const LogitScan scan = ScanLogits(logits);
    max_logit = scan.max;
    argmax = static_cast<int32_t>(scan.argmax);
  }

  int32_t chosen = argmax;
  if (params_.temperature != 0.0f) chosen = Draw(logits, max_logit);

  SampledToken out;
  out.id = chosen;
  out.logprob = std::numeric_limits<float>::quiet_NaN();
  if (params_.logprobs || params_.n_logprobs > 0) {
    double sum = 0.0;
    for (float v : raw) sum += std::exp(double(v) - raw_max);
    const double log_z = double(raw_max) + std::log(sum);
    out.logprob = static_cast<float>(double(raw[static_cast<size_t>(chosen)]) - log_z);
    TopN(raw, static_cast<size_t>(params_.n_logprobs), scratch.candidates);
    out.top_logprobs.reserve(scratch.candidates.size());
    for (const Key& k : scratch.candidates) {
      out.top_logprobs.push_back({k.id, static_cast<float>(double(k.logit) - log_z)});
    }
  }
  ++generated_counts_[chosen];
  PushHistory(chosen);
  return out;
}

int32_t Sampler::Draw(absl::Span<const float> logits, float max_logit) {
  Scratch& scratch = ThreadScratch();
  const double inv_t = 1.0 / double(params_.temperature);
  const double max_l = max_logit;
  // z_i = (l_i - l_max) / T <= 0, and the weight exp(z_i) = p_i / p_max: the quantity min-p
  // thresholds. The most probable token has weight exactly 1, so it always survives min-p.
  auto z_of = [&](float l) { return (double(l) - max_l) * inv_t; };
  const double min_p = params_.min_p;
  const double top_p = params_.top_p;
  const size_t vocab = logits.size();
  const double u = rng_.NextDouble();  // exactly one draw per call, whatever is kept

  // Path 1, top-k active: the k candidates as a sorted list; top-p walks it, min-p filters it,
  // and the draw runs over the kept ones in id order.
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab) {
    std::vector<Key>& cand = scratch.candidates;
    TopN(logits, static_cast<size_t>(params_.top_k), cand);
    size_t n_cand = cand.size();
    if (top_p < 1.0) {
      double z = 0.0;
      for (const Key& k : cand) z += std::exp(z_of(k.logit));
      double cumulative = 0.0;
      for (size_t i = 0; i < cand.size(); ++i) {
        cumulative += std::exp(z_of(cand[i].logit));
        if (cumulative / z >= top_p) {
          n_cand = i + 1;
          break;
        }
      }
    }
    auto& kept = scratch.kept;
    kept.clear();
    for (size_t i = 0; i < n_cand; ++i) {
      const double w = std::exp(z_of(cand[i].logit));
      if (w >= min_p && w > 0.0) kept.push_back({cand[i].id, w});
    }
    std::sort(kept.begin(), kept.end());
    double total = 0.0;
    for (const auto& [id, w] : kept) total += w;
    const double target = u * total;
    double cumulative = 0.0;
    for (const auto& [id, w] : kept) {
      cumulative += w;
      if (target < cumulative) return id;
    }
    return kept.back().first;  // rounding; `kept` holds at least the weight-1 token
  }

  // Path 2, whole vocabulary: weights once, then (for top-p) the cutoff in the sampling order,
  // then the draw in id order. O(V), no sort of the vocabulary.
  std::vector<double>& w = scratch.weights;
  w.resize(vocab);
  double z = 0.0;
  for (size_t i = 0; i < vocab; ++i) {
    w[i] = std::exp(z_of(logits[i]));
    z += w[i];
  }
  // Keep tokens not after `cutoff` in the sampling order; the default keeps every token.
  Key cutoff{-std::numeric_limits<float>::infinity(), std::numeric_limits<int32_t>::max()};
  if (top_p < 1.0) {
    cutoff = NucleusCutoff(logits, w, z, max_logit, params_.temperature, top_p);
  }

  double total = 0.0;
  int32_t last_kept = -1;
  for (size_t i = 0; i < vocab; ++i) {
    const bool keep =
        w[i] > 0.0 && w[i] >= min_p && !Before(cutoff, Key{logits[i], static_cast<int32_t>(i)});
    if (!keep) w[i] = 0.0;
    total += w[i];
    if (keep) last_kept = static_cast<int32_t>(i);
  }
  const double target = u * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < vocab; ++i) {
    cumulative += w[i];
    if (target < cumulative) return static_cast<int32_t>(i);
  }
  return last_kept;
}

}  // namespace tessera
