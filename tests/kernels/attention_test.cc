// CpuBackend::Attention (kernels/cpu/cpu_backend.cc) on the paged KV cache: grouped-query
// causal attention for head dims with a fixed-size path (64, 128) and the generic one (40),
// with an f32 and an f16 cache, against a float64 reference computed here from the same K/V
// (rounded to binary16 by fp16.h's reference conversion for the f16 cache); two sequences with
// scattered block tables, a prefill step then a decode step. Batch invariance: a sequence's
// outputs are the same bits when it runs alone, in other blocks of the cache. And the f16
// cache's kernels (which convert rows as they load them, or through a conversion pass for
// other head dims and CPUs) give the same bits as the f32 cache holding the rounded K/V. One
// sequence's long context, split between the threads, gives the same bits on any thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fp16_rows.h"
#include "kernels/quant/fp16.h"

namespace tessera {
namespace {

constexpr int kKvHeads = 2, kHeads = 6, kBlockTokens = 16, kBlocks = 32;

struct Seq {
  std::vector<int32_t> table;  // block ids
  std::vector<std::vector<float>> k, v;  // per position: kKvHeads * hd
};

// One step: tokens (seq, position) with their q (kHeads * hd) and new k, v.
struct Token {
  int seq;
  int pos;
  std::vector<float> q, k, v;
};

std::vector<float> Normal(int n, std::mt19937* rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& e : x) e = d(*rng);
  return x;
}

float RoundedToFp16(float x) { return Fp16ToFloat(FloatToFp16(x)); }

// Runs one step on `backend` (layer 0) and returns out (n_tokens, kHeads * hd). With
// `round_kv`, k and v go in rounded to binary16.
std::vector<float> RunStep(CpuBackend* backend, const std::vector<Seq>& seqs,
                           const std::vector<Token>& tokens, int hd, bool round_kv = false) {
  AttentionBatch ab;
  std::vector<float> q, k, v;
  for (const Seq& s : seqs) ab.block_table.push_back(s.table);
  for (const Token& t : tokens) {
    ab.seq_of_token.push_back(t.seq);
    ab.position.push_back(t.pos);
    const std::vector<int32_t>& table = seqs[t.seq].table;
    ab.slot_of_token.push_back(int64_t{table[t.pos / kBlockTokens]} * kBlockTokens +
                               t.pos % kBlockTokens);
    q.insert(q.end(), t.q.begin(), t.q.end());
    k.insert(k.end(), t.k.begin(), t.k.end());
    v.insert(v.end(), t.v.begin(), t.v.end());
  }
  if (round_kv) {
    for (float& e : k) e = RoundedToFp16(e);
    for (float& e : v) e = RoundedToFp16(e);
  }
  std::vector<float> out(tokens.size() * kHeads * hd, std::nanf(""));
  const absl::Status st = backend->Attention(0, q.data(), k.data(), v.data(), kHeads, ab, out.data());
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

// Float64 causal attention of one token over its sequence's positions 0..pos.
std::vector<double> Reference(const Seq& s, const Token& t, int hd) {
  std::vector<double> out(static_cast<size_t>(kHeads * hd), 0.0);
  const int group = kHeads / kKvHeads;
  for (int h = 0; h < kHeads; ++h) {
    const int kvh = h / group;
    std::vector<double> w(static_cast<size_t>(t.pos + 1));
    double max_s = -INFINITY;
    for (int p = 0; p <= t.pos; ++p) {
      double dot = 0.0;
      for (int i = 0; i < hd; ++i) dot += double{t.q[h * hd + i]} * s.k[p][kvh * hd + i];
      w[p] = dot / std::sqrt(static_cast<double>(hd));
      max_s = std::max(max_s, w[p]);
    }
    double denom = 0.0;
    for (double& e : w) denom += (e = std::exp(e - max_s));
    for (int p = 0; p <= t.pos; ++p) {
      for (int i = 0; i < hd; ++i) out[h * hd + i] += w[p] / denom * s.v[p][kvh * hd + i];
    }
  }
  return out;
}

// A one-layer cache of kBlocks blocks for kKvHeads heads of hd.
KvLayout OneLayer(int hd, KvType type) {
  KvLayout layout;
  layout.n_layers = 1;
  layout.n_kv_heads = kKvHeads;
  layout.head_dim = hd;
  layout.block_tokens = kBlockTokens;
  layout.n_blocks = kBlocks;
  layout.type = type;
  return layout;
}

// Appends t's K/V to s as a cache of `type` holds them (the reference's K/V).
void Append(const Token& t, KvType type, Seq* s) {
  std::vector<float> k = t.k, v = t.v;
  if (type == KvType::kF16) {
    for (float& e : k) e = RoundedToFp16(e);
    for (float& e : v) e = RoundedToFp16(e);
  }
  s->k.push_back(k);
  s->v.push_back(v);
}

// got (kHeads * hd) against the float64 reference of t over s.
void ExpectNearReference(const float* got, const Seq& s, const Token& t, int hd) {
  const std::vector<double> ref = Reference(s, t, hd);
  for (int e = 0; e < kHeads * hd; ++e) {
    ASSERT_NEAR(got[e], ref[e], 2e-5 * (1.0 + std::fabs(ref[e])))
        << "hd " << hd << " seq " << t.seq << " pos " << t.pos << " element " << e;
  }
}

class AttentionTest : public testing::TestWithParam<std::tuple<int, KvType>> {};

TEST_P(AttentionTest, MatchesFloat64AndIsTheSameBitsAlone) {
  const auto [hd, type] = GetParam();
  const bool f16 = type == KvType::kF16;
  std::mt19937 rng(77 + hd);
  const KvLayout layout = OneLayer(hd, type);
  CpuBackend batched(2), alone(3), f32_rounded(2);
  ASSERT_TRUE(batched.AllocateKvCache(layout).ok());
  ASSERT_TRUE(alone.AllocateKvCache(layout).ok());
  KvLayout f32_layout = layout;
  f32_layout.type = KvType::kF32;
  ASSERT_TRUE(f32_rounded.AllocateKvCache(f32_layout).ok());

  std::vector<Seq> seqs(2);
  seqs[0].table = {5, 2, 9};
  // Sequence 1's 150 positions span ten blocks; the kernels walk them block by block and
  // prefetch rows ahead across block boundaries.
  seqs[1].table = {7, 0, 12, 25, 14, 19, 16, 21, 13, 28};
  std::vector<Seq> solo(1);  // sequence 1 alone, in other blocks
  solo[0].table = {30, 11, 1, 3, 4, 6, 8, 10, 15, 17};
  auto make = [&](int seq, int pos) {
    Token t{seq, pos, Normal(kHeads * hd, &rng), Normal(kKvHeads * hd, &rng),
            Normal(kKvHeads * hd, &rng)};
    if (pos % 7 == 3) {  // a large key: scores far apart, softmax nearly one-hot
      for (float& e : t.k) e *= 8.0f;
    }
    Append(t, type, &seqs[seq]);
    return t;
  };
  // Step 1: prefill 20 tokens of sequence 0 and 149 of sequence 1; step 2: one decode each.
  std::vector<std::vector<Token>> steps(2);
  for (int p = 0; p < 20; ++p) steps[0].push_back(make(0, p));
  for (int p = 0; p < 149; ++p) steps[0].push_back(make(1, p));
  steps[1].push_back(make(1, 149));
  steps[1].push_back(make(0, 20));

  for (const std::vector<Token>& step : steps) {
    const std::vector<float> out = RunStep(&batched, seqs, step, hd);
    if (f16) {
      const std::vector<float> rounded = RunStep(&f32_rounded, seqs, step, hd, /*round_kv=*/true);
      ASSERT_EQ(std::memcmp(out.data(), rounded.data(), out.size() * sizeof(float)), 0)
          << "hd " << hd << ": the f16 cache differs from an f32 cache of the rounded K/V";
    }
    std::vector<Token> mine;
    for (const Token& t : step) {
      if (t.seq == 1) mine.push_back(Token{0, t.pos, t.q, t.k, t.v});
    }
    const std::vector<float> out_alone = RunStep(&alone, solo, mine, hd);
    int j = 0;
    for (size_t i = 0; i < step.size(); ++i) {
      const Token& t = step[i];
      const float* got = out.data() + i * kHeads * hd;
      ASSERT_NO_FATAL_FAILURE(ExpectNearReference(got, seqs[t.seq], t, hd));
      if (t.seq == 1) {
        EXPECT_EQ(std::memcmp(got, out_alone.data() + j * kHeads * hd,
                              sizeof(float) * kHeads * hd),
                  0)
            << "hd " << hd << " pos " << t.pos << ": batched and alone differ";
        ++j;
      }
    }
  }
}

// One sequence's decode token and the end of its prefill, at contexts that Attention splits in
// two chunks (128 positions on) which the threads share: the same bits on 1 to 8 threads
// (the cuts fall inside KV heads and chunks, some threads get no work, a head's two chunks are
// merged after the threads where two threads hold one each), and close to the float64
// reference.
TEST_P(AttentionTest, OneSequenceIsTheSameBitsOnAnyThreadCount) {
  const auto [hd, type] = GetParam();
  std::mt19937 rng(99 + hd);
  const KvLayout layout = OneLayer(hd, type);
  std::vector<Seq> seqs(1);
  for (int b = 0; b < 20; ++b) seqs[0].table.push_back((b * 7) % kBlocks);  // scattered
  auto make = [&](int pos) {
    Token t{0, pos, Normal(kHeads * hd, &rng), Normal(kKvHeads * hd, &rng),
            Normal(kKvHeads * hd, &rng)};
    Append(t, type, &seqs[0]);
    return t;
  };
  // Prefill 300 positions (their contexts 1 .. 300: one chunk below 128, two from there),
  // then decode position 300.
  std::vector<std::vector<Token>> steps(2);
  for (int p = 0; p < 300; ++p) steps[0].push_back(make(p));
  steps[1].push_back(make(300));
  std::vector<std::vector<float>> first;  // per step, on one thread
  for (int threads : {1, 2, 3, 4, 5, 8}) {
    CpuBackend backend(threads);
    ASSERT_TRUE(backend.AllocateKvCache(layout).ok());
    for (size_t s = 0; s < steps.size(); ++s) {
      const std::vector<float> out = RunStep(&backend, seqs, steps[s], hd);
      if (threads == 1) {
        first.push_back(out);
        continue;
      }
      ASSERT_EQ(std::memcmp(out.data(), first[s].data(), out.size() * sizeof(float)), 0)
          << "hd " << hd << " step " << s << ": " << threads << " threads differ from one";
    }
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    for (size_t i = 0; i < steps[s].size(); i += s == 0 ? 37 : 1) {  // some prefill positions
      const Token& t = steps[s][i];
      ASSERT_NO_FATAL_FAILURE(
          ExpectNearReference(first[s].data() + i * kHeads * hd, seqs[0], t, hd));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDimsAndCacheTypes, AttentionTest,
                         testing::Combine(testing::Values(64, 128, 40),
                                          testing::Values(KvType::kF32, KvType::kF16)),
                         [](const testing::TestParamInfo<std::tuple<int, KvType>>& info) {
                           return "hd" + std::to_string(std::get<0>(info.param)) + "_" +
                                  KvTypeName(std::get<1>(info.param));
                         });

// The binary16 row conversions (F16C where the CPU has it) against fp16.h's scalar reference:
// every one of the 65536 bit patterns to float, and floats around every rounding boundary,
// subnormals, overflow and NaN back, in lengths that leave tails of 0..7.
TEST(Fp16RowsTest, MatchTheScalarConversionsBitForBit) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> got(all.size());
  Fp16ToFloats(all.data(), static_cast<int64_t>(all.size()), got.data());
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = Fp16ToFloat(all[i]);
    ASSERT_TRUE(std::memcmp(&got[i], &want, 4) == 0 || (std::isnan(want) && std::isnan(got[i])))
        << std::hex << i;
  }
  std::mt19937 rng(5);
  std::vector<float> in;
  for (uint32_t h = 0; h < 0x7c00; h += 7) {  // each finite half, its neighbours' midpoints
    const float x = Fp16ToFloat(static_cast<uint16_t>(h));
    const float y = Fp16ToFloat(static_cast<uint16_t>(h + 1));
    in.insert(in.end(), {x, -x, (x + y) / 2, std::nextafter((x + y) / 2, 0.0f),
                         std::nextafter((x + y) / 2, 1e9f)});
  }
  in.insert(in.end(), {65519.0f, 65520.0f, 1e30f, -1e30f, INFINITY, -INFINITY, 1e-10f, 0.0f,
                       -0.0f, std::nanf("")});
  for (int len : {1, 7, 8, 13}) {
    for (size_t start = 0; start + len <= in.size(); start += 97) {
      std::vector<uint16_t> h(static_cast<size_t>(len));
      FloatsToFp16(in.data() + start, len, h.data());
      for (int i = 0; i < len; ++i) {
        const float x = in[start + i];
        if (std::isnan(x)) {
          EXPECT_EQ(h[i] & 0x7c00, 0x7c00);
          EXPECT_NE(h[i] & 0x3ff, 0);
        } else {
          ASSERT_EQ(h[i], FloatToFp16(x)) << x;
        }
      }
    }
  }
}

}  // namespace
}  // namespace tessera
