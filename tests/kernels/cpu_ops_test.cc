// CpuBackend's elementwise ops against float64 references: the polynomial exp (exp_poly.h) of
// SwiGLU and the attention softmax, SwiGLU itself, and RoPE (its per-step cos/sin table, which
// must follow the positions from call to call).
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/exp_poly.h"

namespace tessera {
namespace {

TEST(ExpPolyTest, WithinTwoUlpOfExpAndZeroFarBelow) {
  std::vector<float> xs;
  for (float x = -87.0f; x <= 88.0f; x += 0.0013f) xs.push_back(x);
  for (float x : {0.0f, -0.0f, 1e-20f, -1e-20f, 0.34657359f, -0.34657359f}) xs.push_back(x);
  std::vector<float> got(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) got[i] = ExpPoly(xs[i]);  // vectorized at -O3
  for (size_t i = 0; i < xs.size(); ++i) {
    const double want = std::exp(static_cast<double>(xs[i]));
    ASSERT_NEAR(got[i], want, 2.4e-7 * want) << "exp(" << xs[i] << ")";
    // One element at a time (scalar code) gives the same bits as the vector loop.
    volatile float x = xs[i];
    ASSERT_EQ(ExpPoly(x), got[i]) << xs[i];
  }
  for (float x : {-88.0f, -100.0f, -1e30f}) EXPECT_EQ(ExpPoly(x), 0.0f) << x;
  EXPECT_EQ(ExpPoly(1e30f), ExpPoly(88.0f));
}

TEST(CpuSwiGluTest, MatchesFloat64AcrossTheRangeOfExp) {
  std::vector<float> gate, up;
  for (float g = -120.0f; g <= 120.0f; g += 0.37f) gate.push_back(g);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int i = 0; i < 5000; ++i) gate.push_back(normal(rng));
  for (float g : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, -88.0f, 89.0f, -89.0f, 1e30f, -1e30f}) {
    gate.push_back(g);
  }
  for (size_t i = 0; i < gate.size(); ++i) up.push_back(i % 3 == 0 ? -1.5f : 0.75f);
  const int64_t n = static_cast<int64_t>(gate.size());
  CpuBackend backend(2);
  std::vector<float> out(gate.size());
  ASSERT_TRUE(backend.SwiGlu(gate.data(), up.data(), n, out.data()).ok());
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    // A few float roundings and the exp's ~1 ulp; values below 1e-30 in magnitude (silu of a
    // very negative g) only need to be tiny.
    const double tol = std::max(4e-7 * std::abs(want), 1e-30);
    EXPECT_NEAR(out[i], want, tol) << "gate " << gate[i] << " up " << up[i];
  }
  // In place (out = gate), and element by element: any split gives the same bits.
  std::vector<float> in_place = gate;
  ASSERT_TRUE(backend.SwiGlu(in_place.data(), up.data(), n, in_place.data()).ok());
  EXPECT_EQ(in_place, out);
  for (int64_t i = 0; i < n; i += 97) {
    float one;
    ASSERT_TRUE(backend.SwiGlu(&gate[i], &up[i], 1, &one).ok());
    EXPECT_EQ(one, out[i]) << i;
  }
}

// Rotates x (n_tokens, n_heads * head_dim) in float64 as the backend's RoPE promises.
std::vector<double> RopeReference(const std::vector<float>& x, int n_heads, int head_dim,
                                  const std::vector<int32_t>& pos, double base) {
  std::vector<double> y(x.begin(), x.end());
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < head_dim / 2; ++i) {
        const double angle = pos[t] * std::pow(base, -2.0 * i / head_dim);
        double* p = &y[(t * n_heads + h) * head_dim + 2 * i];
        const double x0 = p[0], x1 = p[1];
        p[0] = x0 * std::cos(angle) - x1 * std::sin(angle);
        p[1] = x0 * std::sin(angle) + x1 * std::cos(angle);
      }
    }
  }
  return y;
}

TEST(CpuRopeTest, FollowsThePositionsFromCallToCall) {
  constexpr int kHeadDim = 64;
  RopeParams params;
  params.head_dim = kHeadDim;
  params.rope_dims = kHeadDim;
  params.freq_base = 10000.0f;
  CpuBackend backend(2);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Q (3 heads) and K (1 head) of one step, then the next steps' positions, then a step whose
  // positions repeat an earlier one, then a different frequency base at the same positions.
  struct Call {
    std::vector<int32_t> pos;
    int n_heads;
    float base;
  };
  const Call calls[] = {{{0, 5, 17}, 3, 10000.0f},  {{0, 5, 17}, 1, 10000.0f},
                        {{1, 6, 18}, 3, 10000.0f},  {{1, 6, 18, 40}, 1, 10000.0f},
                        {{0, 5, 17}, 3, 10000.0f},  {{0, 5, 17}, 3, 500000.0f},
                        {{33}, 2, 500000.0f}};
  for (const Call& c : calls) {
    params.freq_base = c.base;
    const int64_t n_tokens = static_cast<int64_t>(c.pos.size());
    std::vector<float> x(static_cast<size_t>(n_tokens * c.n_heads * kHeadDim));
    for (float& v : x) v = normal(rng);
    const std::vector<double> want = RopeReference(x, c.n_heads, kHeadDim, c.pos, c.base);
    ASSERT_TRUE(backend.Rope(x.data(), n_tokens, c.n_heads, c.pos.data(), params).ok());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(x[i], want[i], 1e-5 + 1e-5 * std::abs(want[i]))
          << "element " << i << " of the call at position " << c.pos[0] << ", base " << c.base;
    }
  }
}

}  // namespace
}  // namespace tessera
