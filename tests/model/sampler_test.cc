// Sampler tests against independent float64 references written here: exact probabilities after
// penalties / temperature / top-k / top-p / min-p (full sort, no shortcuts), hand-computed
// penalty formulas, float64 log-softmax, and published PRNG outputs. Every random draw uses a
// fixed seed, so the statistical checks are deterministic (they either always pass or always
// fail); their thresholds are set at p ~ 1e-7 so a correct sampler passes for essentially any
// seed, while the errors they guard against (wrong order of operations, temperature not
// applied, off-by-one truncation) move the statistics by orders of magnitude.
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/rng.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Float64 reference.

struct RefResult {
  std::vector<double> probs;  // final sampling distribution over the vocabulary
  bool ambiguous = false;     // a top-p / min-p boundary within 1e-9: float rounding may differ
};

// The documented pipeline, written the slow, obvious way: full sort, float64 throughout.
RefResult ReferenceDistribution(const std::vector<double>& logits, const SamplingParams& p) {
  const size_t n = logits.size();
  RefResult r;
  r.probs.assign(n, 0.0);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  if (p.temperature == 0.0f) {
    r.probs[order[0]] = 1.0;
    return r;
  }
  std::vector<double> prob(n);
  double z = 0.0;
  for (size_t i = 0; i < n; ++i) z += std::exp(logits[i] / p.temperature);
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp(logits[i] / p.temperature) / z;
  size_t keep = n;
  if (p.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(p.top_k));
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (size_t i = 0; i < keep; ++i) mass += prob[order[i]];
    double cumulative = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += prob[order[i]] / mass;
      if (std::abs(cumulative - p.top_p) < 1e-9) r.ambiguous = true;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double p_max = prob[order[0]];
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    const size_t id = order[i];
    const double ratio = prob[id] / p_max;
    if (p.min_p > 0.0f && std::abs(ratio - p.min_p) < 1e-9) r.ambiguous = true;
    if (ratio >= p.min_p) {
      r.probs[id] = prob[id];
      total += prob[id];
    }
  }
  for (double& q : r.probs) q /= total;
  return r;
}

// Hand formula of the penalties: repetition (divide positive, multiply negative) for each
// distinct id of `window`, then logit -= count * freq + (count > 0) * presence over `generated`.
std::vector<double> ReferencePenalties(const std::vector<float>& logits,
                                       const std::vector<int32_t>& window,
                                       const std::vector<int32_t>& generated, double rep,
                                       double freq, double presence) {
  std::vector<double> out(logits.begin(), logits.end());
  for (int32_t id : std::set<int32_t>(window.begin(), window.end())) {
    out[id] = out[id] > 0 ? out[id] / rep : out[id] * rep;
  }
  for (int32_t id : std::set<int32_t>(generated.begin(), generated.end())) {
    const auto count = std::count(generated.begin(), generated.end(), id);
    out[id] -= static_cast<double>(count) * freq + presence;
  }
  return out;
}

// Test-side random numbers: a fixed linear congruential generator (Knuth's MMIX constants),
// deliberately not the sampler's own generator.
class TestRng {
 public:
  explicit TestRng(uint64_t seed) : x_(seed * 2 + 1) {}
  double Uniform() {
    x_ = x_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(x_ >> 11) * 0x1.0p-53;
  }
  float Logit(double scale) { return static_cast<float>((Uniform() * 2.0 - 1.0) * scale); }
  int32_t Below(int32_t n) { return static_cast<int32_t>(Uniform() * n); }

 private:
  uint64_t x_;
};

std::vector<float> RandomLogits(TestRng& rng, size_t n, double scale) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.Logit(scale);
  return v;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

Sampler MakeSampler(const SamplingParams& p, int32_t vocab) {
  absl::StatusOr<Sampler> s = Sampler::Create(p, vocab);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

int32_t SampleId(Sampler& s, const std::vector<float>& logits) {
  absl::StatusOr<SampledToken> t = s.Sample(logits);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? t->id : -1;
}

// Pearson chi-square of `counts` against `probs` (bins with expected count < 5 merged), and the
// critical value for p ~ 1e-7 by the Wilson-Hilferty approximation.
struct ChiSquare {
  double statistic = 0.0;
  double critical = 0.0;
};
ChiSquare ChiSquareTest(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                        int64_t draws) {
  ChiSquare c;
  double rest_expected = 0.0;
  int64_t rest_observed = 0;
  int bins = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const double expected = probs[i] * static_cast<double>(draws);
    if (expected < 5.0) {
      rest_expected += expected;
      rest_observed += counts[i];
      continue;
    }
    c.statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++bins;
  }
  if (rest_expected > 0.0) {
    c.statistic += (rest_observed - rest_expected) * (rest_observed - rest_expected) /
                   std::max(rest_expected, 1.0);
    ++bins;
  }
  const double df = std::max(1, bins - 1);
  const double z = 5.2;  // one-sided normal quantile for p ~ 1e-7
  const double h = 2.0 / (9.0 * df);
  c.critical = df * std::pow(1.0 - h + z * std::sqrt(h), 3.0);
  return c;
}

// Draws `draws` tokens and checks them against the exact distribution: no token outside the
// support, chi-square below its critical value.
void ExpectDistribution(const SamplingParams& params, const std::vector<float>& logits,
                        const std::vector<double>& probs, int64_t draws) {
  Sampler s = MakeSampler(params, static_cast<int32_t>(logits.size()));
  std::vector<int64_t> counts(logits.size(), 0);
  for (int64_t d = 0; d < draws; ++d) {
    const int32_t id = SampleId(s, logits);
    ASSERT_GE(id, 0);
    ASSERT_GT(probs[id], 0.0) << "token " << id << " is outside the allowed set";
    ++counts[id];
  }
  const ChiSquare c = ChiSquareTest(counts, probs, draws);
  EXPECT_LT(c.statistic, c.critical)
      << "temperature=" << params.temperature << " top_k=" << params.top_k
      << " top_p=" << params.top_p << " min_p=" << params.min_p;
}

// ---------------------------------------------------------------------------------------------
// PRNG.

TEST(Rng, SplitMix64MatchesPublishedSequence) {
  // Rosetta Code, "Pseudo-random numbers/Splitmix64", seed 1234567.
  SplitMix64 g(1234567);
  EXPECT_EQ(g.Next(), 6457827717110365317ULL);
  EXPECT_EQ(g.Next(), 3203168211198807973ULL);
  EXPECT_EQ(g.Next(), 9817491932198370423ULL);
  EXPECT_EQ(g.Next(), 4593380528125082431ULL);
  EXPECT_EQ(g.Next(), 16408922859458223821ULL);
}

TEST(Rng, Xoshiro256StarStarMatchesPythonReference) {
  // From a separate arbitrary-precision Python transcription of Vigna's xoshiro256starstar.c,
  // seeded with four splitmix64 outputs.
  Xoshiro256StarStar g0(0);
  EXPECT_EQ(g0.Next(), 0x99ec5f36cb75f2b4ULL);
  EXPECT_EQ(g0.Next(), 0xbf6e1f784956452aULL);
  EXPECT_EQ(g0.Next(), 0x1a5f849d4933e6e0ULL);
  EXPECT_EQ(g0.Next(), 0x6aa594f1262d2d2cULL);
  EXPECT_EQ(g0.Next(), 0xbba5ad4a1f842e59ULL);
  Xoshiro256StarStar g42(42);
  EXPECT_EQ(g42.Next(), 0x15780b2e0c2ec716ULL);
  EXPECT_EQ(g42.Next(), 0x6104d9866d113a7eULL);
  Xoshiro256StarStar gmax(~0ULL);
  EXPECT_EQ(gmax.Next(), 0x8f5520d52a7ead08ULL);
  Xoshiro256StarStar d(42);
  EXPECT_DOUBLE_EQ(d.NextDouble(), 0.08386297105988216);
  EXPECT_DOUBLE_EQ(d.NextDouble(), 0.3789802506626686);
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct BadParamCase {
  const char* name;
  SamplingParams params;
  const char* expect;  // substring of the message: parameter and value
};

TEST(SamplingParams, RejectsOutOfRangeValuesByName) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<BadParamCase> cases;
  auto add = [&](const char* name, auto mutate, const char* expect) {
    SamplingParams p;
    mutate(p);
    cases.push_back({name, p, expect});
  };
  add(
      "negative temperature", [](SamplingParams& p) { p.temperature = -0.5f; }, "temperature=-0.5");
  add(
      "NaN temperature", [&](SamplingParams& p) { p.temperature = nan; }, "temperature=nan");
  add(
      "inf temperature", [](SamplingParams& p) { p.temperature = kInf; }, "temperature=inf");
  add(
      "negative top_k", [](SamplingParams& p) { p.top_k = -1; }, "top_k=-1");
  add(
      "zero top_p", [](SamplingParams& p) { p.top_p = 0.0f; }, "top_p=0");
  add(
      "top_p above 1", [](SamplingParams& p) { p.top_p = 1.5f; }, "top_p=1.5");
  add(
      "NaN top_p", [&](SamplingParams& p) { p.top_p = nan; }, "top_p=nan");
  add(
      "negative min_p", [](SamplingParams& p) { p.min_p = -0.25f; }, "min_p=-0.25");
  add(
      "min_p above 1", [](SamplingParams& p) { p.min_p = 2.0f; }, "min_p=2");
  add(
      "zero repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; },
      "repetition_penalty=0");
  add(
      "NaN repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = nan; },
      "repetition_penalty=nan");
  add(
      "repeat_last_n below -1", [](SamplingParams& p) { p.repeat_last_n = -2; },
      "repeat_last_n=-2");
  add(
      "frequency_penalty above 2", [](SamplingParams& p) { p.frequency_penalty = 2.5f; },
      "frequency_penalty=2.5");
  add(
      "NaN presence_penalty", [&](SamplingParams& p) { p.presence_penalty = nan; },
      "presence_penalty=nan");
  add(
      "n_logprobs above 20", [](SamplingParams& p) { p.n_logprobs = 21; }, "n_logprobs=21");
  add(
      "negative n_logprobs", [](SamplingParams& p) { p.n_logprobs = -1; }, "n_logprobs=-1");
  for (const BadParamCase& c : cases) {
    const absl::Status s = c.params.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(s.message(), HasSubstr(c.expect)) << c.name;
    EXPECT_FALSE(Sampler::Create(c.params, 10).ok()) << c.name;
  }
}

TEST(SamplingParams, AcceptsBoundaryValues) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repeat_last_n = -1;
  p.frequency_penalty = -2.0f;
  p.presence_penalty = 2.0f;
  p.n_logprobs = 20;
  EXPECT_TRUE(p.Validate().ok()) << p.Validate();
  EXPECT_TRUE(SamplingParams().Validate().ok());
  EXPECT_FALSE(Sampler::Create(SamplingParams(), 0).ok());
}

TEST(Sampler, RejectsBadLogitsAndTokenIds) {
  Sampler s = MakeSampler(SamplingParams(), 4);
  EXPECT_THAT(s.Sample(std::vector<float>{1, 2, 3}).status().message(),
              HasSubstr("got 3 logits, expected vocab_size=4"));
  EXPECT_THAT(s.Sample(std::vector<float>{1, std::nanf(""), 3, 4}).status().message(),
              HasSubstr("logit of token 1 is NaN"));
  EXPECT_THAT(s.Sample(std::vector<float>{1, 2, kInf, 4}).status().message(),
              HasSubstr("logit of token 2 is +inf"));
  EXPECT_THAT(s.Sample(std::vector<float>{-kInf, -kInf, -kInf, -kInf}).status().message(),
              HasSubstr("every logit is -inf"));
  EXPECT_THAT(s.AddPromptTokens(std::vector<int32_t>{0, 4}).message(),
              HasSubstr("prompt token 1 has id 4, outside the vocabulary [0, 4)"));
  EXPECT_FALSE(s.AddGeneratedToken(-1).ok());
}

// ---------------------------------------------------------------------------------------------
// Greedy.

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  TestRng rng(1);
  SamplingParams p;
  p.temperature = 0.0f;
  for (int trial = 0; trial < 50; ++trial) {
    // Coarse values (multiples of 1/4 in a small range) so ties at the maximum are common.
    std::vector<float> logits(1 + rng.Below(300));
    for (float& x : logits) x = static_cast<float>(rng.Below(12)) * 0.25f - 1.0f;
    int32_t expect = 0;
    for (size_t i = 1; i < logits.size(); ++i) {
      if (logits[i] > logits[expect]) expect = static_cast<int32_t>(i);
    }
    p.seed = trial;
    Sampler s = MakeSampler(p, static_cast<int32_t>(logits.size()));
    EXPECT_EQ(SampleId(s, logits), expect) << "trial " << trial;
  }
  Sampler s = MakeSampler(p, 5);
  EXPECT_EQ(SampleId(s, {-1, 3, 2, 3, 3}), 1);
  EXPECT_EQ(SampleId(s, {-kInf, -kInf, -kInf, -7, -kInf}), 3);
}

// ScanLogits (vectorized) against the obvious loop: the first index whose value is larger than
// all before it, the first NaN or +inf. Lengths around the 16-lane groups, ties, +0 and -0
// (equal), -inf everywhere but one place, bad values in the groups and in the tail.
TEST(ScanLogits, AgreesWithTheObviousLoop) {
  auto reference = [](const std::vector<float>& v) {
    LogitScan r;
    r.max = -kInf;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!(v[i] <= std::numeric_limits<float>::max())) {
        r.first_bad = static_cast<int64_t>(i);
        return r;
      }
      if (v[i] > r.max) {
        r.max = v[i];
        r.argmax = static_cast<int64_t>(i);
      }
    }
    return r;
  };
  auto check = [&](const std::vector<float>& v, const std::string& what) {
    const LogitScan want = reference(v);
    const LogitScan got = ScanLogits(v);
    EXPECT_EQ(got.first_bad, want.first_bad) << what;
    if (want.first_bad >= 0) return;
    EXPECT_EQ(got.argmax, want.argmax) << what;
    if (want.argmax >= 0) {
      EXPECT_EQ(got.max, want.max) << what;
    }
  };
  check({}, "empty");
  TestRng rng(3);
  for (size_t n : {1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 49152}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> v(n);
      // Coarse values so that the maximum is often tied; zeros of both signs.
      for (float& x : v) {
        x = static_cast<float>(rng.Below(9)) * 0.5f - 4.0f;
        if (x == 0.0f && rng.Below(2) == 0) x = -0.0f;
      }
      const std::string what = "n " + std::to_string(n) + " trial " + std::to_string(trial);
      check(v, what);
      std::vector<float> zeros(n, rng.Below(2) == 0 ? 0.0f : -0.0f);
      zeros[rng.Below(static_cast<int32_t>(n))] = trial % 2 == 0 ? 0.0f : -0.0f;
      check(zeros, what + " zeros");
      std::vector<float> masked(n, -kInf);
      check(masked, what + " all -inf");
      masked[rng.Below(static_cast<int32_t>(n))] = -1e30f;
      check(masked, what + " one finite");
      std::vector<float> bad = v;
      bad[rng.Below(static_cast<int32_t>(n))] = trial % 2 == 0 ? std::nanf("") : kInf;
      bad[rng.Below(static_cast<int32_t>(n))] = trial % 3 == 0 ? kInf : std::nanf("");
      check(bad, what + " bad");
    }
  }
}

TEST(Sampler, AllButOneMaskedAlwaysPicksTheSurvivor) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_p = 0.5f;
  p.min_p = 0.1f;
  std::vector<float> logits(1000, -kInf);
  logits[617] = -3.0f;
  Sampler s = MakeSampler(p, 1000);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleId(s, logits), 617);
}

// ---------------------------------------------------------------------------------------------
// Distributions.

TEST(Sampler, DistributionMatchesFloat64Reference) {
  TestRng rng(7);
  struct Config {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const Config configs[] = {
      {1.0f, 0, 1.0f, 0.0f},   {0.7f, 0, 1.0f, 0.0f}, {1.6f, 0, 1.0f, 0.0f}, {1.0f, 5, 1.0f, 0.0f},
      {0.8f, 0, 0.8f, 0.0f},   {1.3f, 0, 1.0f, 0.2f}, {1.0f, 9, 0.7f, 0.0f}, {1.2f, 12, 0.9f, 0.1f},
      {0.5f, 0, 0.95f, 0.05f}, {2.0f, 3, 1.0f, 0.0f},
  };
  int checked = 0;
  for (const Config& c : configs) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.seed = 1000 + checked;
    std::vector<float> logits;
    RefResult ref;
    do {
      logits = RandomLogits(rng, 16, 2.0);
      ref = ReferenceDistribution(ToDouble(logits), p);
    } while (ref.ambiguous);
    ExpectDistribution(p, logits, ref.probs, 20000);
    ++checked;
  }
  EXPECT_EQ(checked, 10);
}

TEST(Sampler, EachDrawMatchesFloat64InverseCdf) {
  // The documented draw: u from the sequence's xoshiro256** stream, the first token in id
  // order whose cumulative probability exceeds u. Replayed here with float64 probabilities.
  TestRng rng(11);
  for (int trial = 0; trial < 40; ++trial) {
    SamplingParams p;
    p.temperature = 0.3f + static_cast<float>(rng.Uniform() * 1.5);
    p.top_k = trial % 3 == 0 ? 1 + rng.Below(50) : 0;
    p.top_p = trial % 2 == 0 ? 0.5f + static_cast<float>(rng.Uniform() * 0.5) : 1.0f;
    p.min_p = trial % 5 == 0 ? static_cast<float>(rng.Uniform() * 0.2) : 0.0f;
    p.seed = 77 + trial;
    std::vector<float> logits;
    RefResult ref;
    do {
      logits = RandomLogits(rng, 300 + rng.Below(700), 4.0);
      ref = ReferenceDistribution(ToDouble(logits), p);
    } while (ref.ambiguous);
    Sampler s = MakeSampler(p, static_cast<int32_t>(logits.size()));
    Xoshiro256StarStar replay(p.seed);
    for (int d = 0; d < 25; ++d) {
      const double u = replay.NextDouble();
      double cumulative = 0.0;
      int32_t expect = -1;
      bool near_edge = false;
      for (size_t i = 0; i < ref.probs.size(); ++i) {
        cumulative += ref.probs[i];
        if (ref.probs[i] > 0 && std::abs(cumulative - u) < 1e-9) near_edge = true;
        if (expect < 0 && u < cumulative) expect = static_cast<int32_t>(i);
      }
      const int32_t got = SampleId(s, logits);
      if (!near_edge) {
        EXPECT_EQ(got, expect) << "trial " << trial << " draw " << d;
      }
    }
  }
}

TEST(Sampler, SupportSetsMatchFloat64ReferenceOnLargeVocab) {
  // Large vocabularies exercise the partial-selection paths (top-k heap, growing top-p
  // candidate list past 64 and 512 tokens). Every draw must be in the reference's allowed set,
  // and when that set is small every member must show up.
  TestRng rng(5);
  struct Config {
    int32_t vocab;
    double scale;  // logits uniform in [-scale, scale] ...
    int spikes;    // ... but this many tokens at scale + 12..14 (a peaked distribution)
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const Config configs[] = {
      {50000, 12.0, 0, 1.0f, 40, 1.0f, 0.0f},     // top-k only
      {20000, 4.0, 0, 1.0f, 12, 1.0f, 0.0f},      // top-k, small support
      {20000, 4.0, 8, 1.0f, 0, 0.6f, 0.0f},       // nucleus of a few tokens
      {20000, 1.0, 0, 1.0f, 0, 0.3f, 0.0f},       // flat: nucleus of thousands (list regrown)
      {20000, 2.0, 0, 1.0f, 0, 0.05f, 0.0f},      // nucleus of ~250 tokens (list regrown once)
      {20000, 4.0, 8, 0.8f, 0, 1.0f, 0.3f},       // min-p only (full pass, no list)
      {30000, 6.0, 0, 1.2f, 100, 0.9f, 0.05f},    // all three
      {30000, 3.0, 0, 1.0f, 25000, 0.97f, 0.0f},  // top-k selecting most of the vocab
  };
  for (const Config& c : configs) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    std::vector<float> logits;
    RefResult ref;
    do {
      logits = RandomLogits(rng, static_cast<size_t>(c.vocab), c.scale);
      for (int i = 0; i < c.spikes; ++i) {
        logits[rng.Below(c.vocab)] = static_cast<float>(c.scale + 12.0 + 2.0 * rng.Uniform());
      }
      ref = ReferenceDistribution(ToDouble(logits), p);
    } while (ref.ambiguous);
    int64_t support = 0;
    for (double q : ref.probs) support += q > 0 ? 1 : 0;
    Sampler s = MakeSampler(p, c.vocab);
    std::set<int32_t> seen;
    const int draws = support <= 20 ? 400 : 150;
    for (int d = 0; d < draws; ++d) {
      const int32_t id = SampleId(s, logits);
      ASSERT_GE(id, 0);
      ASSERT_GT(ref.probs[id], 0.0)
          << "token " << id << " outside the allowed set (top_k=" << c.top_k << " top_p=" << c.top_p
          << " min_p=" << c.min_p << ", " << support << " allowed)";
      seen.insert(id);
    }
    if (support <= 20) {
      double min_prob = 1.0;
      for (double q : ref.probs) {
        if (q > 0) min_prob = std::min(min_prob, q);
      }
      // A member is missed in 400 draws with probability (1 - q)^400: only check when that is
      // below 1e-7 (q > 4%).
      if (min_prob > 0.04) {
        EXPECT_EQ(static_cast<int64_t>(seen.size()), support);
      } else {
        ADD_FAILURE() << "test setup: smallest allowed probability " << min_prob << " too small";
      }
    }
  }
}

TEST(Sampler, TopKTiesAtTheBoundaryKeepLowestIds) {
  // Sampling order: higher logit first, equal logits by lower id. top_k=2 over
  // {1: 2.0, 2: 2.0, 3: 2.0} keeps ids 1 and 2 only.
  SamplingParams p;
  p.top_k = 2;
  const std::vector<float> logits = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
  ExpectDistribution(p, logits, {0.0, 0.5, 0.5, 0.0, 0.0}, 4000);
  p.top_k = 0;
  p.top_p = 0.5f;  // first token of the order reaches 1/3 + ..., two tokens reach >= 0.5
  const double e1 = std::exp(1.0), e2 = std::exp(2.0);
  const double z = e1 + 3 * e2 + 1.0;
  ASSERT_LT(e2 / z, 0.5);
  ASSERT_GE(2 * e2 / z, 0.5);
  ExpectDistribution(p, logits, {0.0, 0.5, 0.5, 0.0, 0.0}, 4000);
}

// ---------------------------------------------------------------------------------------------
// Penalties.

TEST(Sampler, PenaltyFormulasFlipGreedyExactlyWhereHandComputed) {
  // Token 0 generated twice: 2.0 / 1.25 - 2 * 0.3 - 0.2 = 0.8. A competitor at 0.8 +- 0.01
  // decides which side of the hand-computed value the penalized logit lies on.
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.25f;
  p.frequency_penalty = 0.3f;
  p.presence_penalty = 0.2f;
  for (const auto& [competitor, expect] : {std::pair{0.81f, 1}, std::pair{0.79f, 0}}) {
    Sampler s = MakeSampler(p, 3);
    ASSERT_TRUE(s.AddGeneratedToken(0).ok());
    ASSERT_TRUE(s.AddGeneratedToken(0).ok());
    EXPECT_EQ(SampleId(s, {2.0f, competitor, -5.0f}), expect) << competitor;
  }
  // A tie created by the penalty (2.0 / 2 = 1.0 exactly) still goes to the lowest id.
  SamplingParams tie;
  tie.temperature = 0.0f;
  tie.repetition_penalty = 2.0f;
  for (int32_t first : {0, 1}) {
    Sampler s = MakeSampler(tie, 3);
    ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{first}).ok());
    std::vector<float> logits = {1.0f, 1.0f, -5.0f};
    logits[first] = 2.0f;
    EXPECT_EQ(SampleId(s, logits), 0) << first;
  }
  // Negative logit, generated once: -0.5 * 1.25 - 0.3 - 0.2 = -1.125.
  for (const auto& [competitor, expect] : {std::pair{-1.12f, 1}, std::pair{-1.13f, 0}}) {
    Sampler s = MakeSampler(p, 3);
    ASSERT_TRUE(s.AddGeneratedToken(0).ok());
    EXPECT_EQ(SampleId(s, {-0.5f, competitor, -5.0f}), expect) << competitor;
  }
}

TEST(Sampler, RepetitionPenaltyWindowAndPromptSemantics) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  // Prompt tokens count for the repetition penalty, once per distinct id: 4 / 2 = 2 (not
  // 4 / 2^3), so a competitor at 2.5 wins and one at 1.5 loses.
  {
    Sampler s = MakeSampler(p, 3);
    ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{0, 0, 0}).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 2.5f, 0.0f}), 1);
  }
  {
    Sampler s = MakeSampler(p, 3);
    ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{0, 0, 0}).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 1.5f, 0.0f}), 0);
  }
  // Window of the last 3 tokens of [0, 1, 2, 2]: {1, 2}; token 0 is out of it.
  p.repeat_last_n = 3;
  {
    Sampler s = MakeSampler(p, 4);
    ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{0, 1, 2, 2}).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 3.9f, 3.8f, 3.0f}), 0);  // 0 unpenalized
    // The sampled 0 has entered the window ([2, 2, 0] now), and 1 has left it.
    EXPECT_EQ(SampleId(s, {4.0f, 3.9f, 3.8f, 3.0f}), 1);
  }
  // Token 0 followed by 100 tokens 3: outside the default window of 64, inside "all" (-1).
  std::vector<int32_t> long_prompt(101, 3);
  long_prompt[0] = 0;
  p.repeat_last_n = 64;
  {
    Sampler s = MakeSampler(p, 4);
    ASSERT_TRUE(s.AddPromptTokens(long_prompt).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 3.9f, 3.8f, 3.0f}), 0);
  }
  p.repeat_last_n = -1;
  {
    Sampler s = MakeSampler(p, 4);
    ASSERT_TRUE(s.AddPromptTokens(long_prompt).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 3.9f, 3.8f, 3.0f}), 1);  // 2.0, 3.9, 3.8, 1.5
  }
  p.repeat_last_n = 0;  // off
  {
    Sampler s = MakeSampler(p, 2);
    ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{0}).ok());
    EXPECT_EQ(SampleId(s, {4.0f, 3.9f}), 0);
  }
  // Frequency / presence ignore the prompt (they count generated tokens only).
  SamplingParams q;
  q.temperature = 0.0f;
  q.frequency_penalty = 2.0f;
  q.presence_penalty = 2.0f;
  Sampler s = MakeSampler(q, 2);
  ASSERT_TRUE(s.AddPromptTokens(std::vector<int32_t>{0, 0, 0}).ok());
  EXPECT_EQ(SampleId(s, {1.0f, 0.5f}), 0);
}

TEST(Sampler, SampledTokensFeedThePenalties) {
  // Presence 0.5 and greedy on fixed logits {1.0, 0.9}: 0 (then 0.5 vs 0.9), 1 (0.5 vs 0.4),
  // 0 (both penalized once: 0.5 vs 0.4), ... with frequency 0 this alternates 0, 1, 0, 0, ...
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  Sampler s = MakeSampler(p, 2);
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) got.push_back(SampleId(s, {1.0f, 0.9f}));
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 0, 0}));
}

TEST(Sampler, PenalizedDistributionMatchesFloat64Formula) {
  TestRng rng(3);
  for (int trial = 0; trial < 4; ++trial) {
    SamplingParams p;
    p.temperature = 0.9f;
    p.repetition_penalty = 1.0f + static_cast<float>(rng.Uniform());
    p.repeat_last_n = 6;
    p.frequency_penalty = static_cast<float>(rng.Uniform() * 2.0 - 1.0);
    p.presence_penalty = static_cast<float>(rng.Uniform() * 2.0 - 1.0);
    p.seed = 500 + trial;
    const int32_t vocab = 12;
    std::vector<int32_t> prompt, generated;
    for (int i = 0; i < 5; ++i) prompt.push_back(rng.Below(vocab));
    for (int i = 0; i < 4; ++i) generated.push_back(rng.Below(vocab));
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    const std::vector<int32_t> window(all.end() - 6, all.end());
    const std::vector<float> logits = RandomLogits(rng, vocab, 2.0);

    // The sampler records each draw, which would change the penalties; build a fresh one per
    // draw with the same history and a different seed instead.
    const std::vector<double> penalized = ReferencePenalties(
        logits, window, generated, p.repetition_penalty, p.frequency_penalty, p.presence_penalty);
    const RefResult ref = ReferenceDistribution(penalized, p);
    const int64_t draws = 10000;
    std::vector<int64_t> counts(vocab, 0);
    for (int64_t d = 0; d < draws; ++d) {
      p.seed = static_cast<uint64_t>(trial) * 1000003 + static_cast<uint64_t>(d);
      Sampler s = MakeSampler(p, vocab);
      ASSERT_TRUE(s.AddPromptTokens(prompt).ok());
      for (int32_t id : generated) ASSERT_TRUE(s.AddGeneratedToken(id).ok());
      ++counts[SampleId(s, logits)];
    }
    const ChiSquare c = ChiSquareTest(counts, ref.probs, draws);
    EXPECT_LT(c.statistic, c.critical) << "trial " << trial;
  }
}

// ---------------------------------------------------------------------------------------------
// Determinism and logprobs.

TEST(Sampler, SameSeedSameTokensDifferentSeedsDiffer) {
  TestRng rng(9);
  const std::vector<float> logits = RandomLogits(rng, 5000, 3.0);
  SamplingParams p;
  p.top_p = 0.95f;
  p.repetition_penalty = 1.1f;
  auto run = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s = MakeSampler(p, 5000);
    std::vector<int32_t> ids;
    for (int i = 0; i < 100; ++i) ids.push_back(SampleId(s, logits));
    return ids;
  };
  const std::vector<int32_t> a = run(1234);
  EXPECT_EQ(a, run(1234));
  EXPECT_NE(a, run(1235));
  EXPECT_NE(a, run(0));
}

TEST(Sampler, LogprobsAreFloat64LogSoftmaxOfRawLogits) {
  // Tolerance 2e-5 absolute: the values (around -10) are rounded once from double to float
  // (relative 6e-8), plus float inputs summed in double.
  TestRng rng(13);
  std::vector<float> logits = RandomLogits(rng, 4096, 8.0);
  logits[5] = -kInf;
  logits[100] = logits[200] = 9.0f;  // a tie inside the top alternatives
  logits[300] = 9.5f;
  double max = -1e300;
  for (float v : logits) max = std::max(max, double(v));
  double sum = 0.0;
  for (float v : logits) sum += std::exp(double(v) - max);
  const double log_z = max + std::log(sum);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

  SamplingParams p;
  p.temperature = 0.7f;  // logprobs ignore temperature, truncation and penalties
  p.top_k = 10;
  p.presence_penalty = 1.5f;
  p.n_logprobs = 6;
  Sampler s = MakeSampler(p, static_cast<int32_t>(logits.size()));
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<SampledToken> t = s.Sample(logits);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_NEAR(t->logprob, double(logits[t->id]) - log_z, 2e-5);
    ASSERT_EQ(t->top_logprobs.size(), 6u);
    for (int k = 0; k < 6; ++k) {
      EXPECT_EQ(t->top_logprobs[k].id, order[k]) << k;
      EXPECT_NEAR(t->top_logprobs[k].logprob, double(logits[order[k]]) - log_z, 2e-5);
    }
  }
  EXPECT_EQ(order[0], 300);
  EXPECT_LT(std::find(order.begin(), order.end(), 100), std::find(order.begin(), order.end(), 200));

  SamplingParams off;
  Sampler quiet = MakeSampler(off, static_cast<int32_t>(logits.size()));
  absl::StatusOr<SampledToken> t = quiet.Sample(logits);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(std::isnan(t->logprob));
  EXPECT_TRUE(t->top_logprobs.empty());

  off.logprobs = true;
  Sampler only_chosen = MakeSampler(off, static_cast<int32_t>(logits.size()));
  t = only_chosen.Sample(logits);
  ASSERT_TRUE(t.ok());
  EXPECT_NEAR(t->logprob, double(logits[t->id]) - log_z, 2e-5);
  EXPECT_TRUE(t->top_logprobs.empty());
}

TEST(Sampler, LargeVocabTopKDrawsStayInTheTopK) {
  // A Llama 3 sized vocabulary (128256) with top_k = 40: every draw is one of the 40 largest.
  TestRng rng(21);
  const std::vector<float> logits = RandomLogits(rng, 128256, 10.0);
  std::vector<float> sorted = logits;
  std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
  const float kth = sorted[39];
  SamplingParams p;
  p.top_k = 40;
  p.n_logprobs = 3;
  Sampler s = MakeSampler(p, 128256);
  for (int i = 0; i < 20; ++i) EXPECT_GE(logits[SampleId(s, logits)], kth);
}

}  // namespace
}  // namespace tessera
