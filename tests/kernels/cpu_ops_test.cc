// CpuBackend's elementwise ops against float64 references: the polynomial exp (exp_poly.h) of
// SwiGLU and the attention softmax, SwiGLU itself, and RoPE (its per-step cos/sin table, which
// must follow the positions from call to call). And the fused residual add -> RMSNorm ->
// products and SwiGLU -> product (AddRmsNormMatMuls, SwiGluMatMul) against the separate ops,
// bit for bit.
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/exp_poly.h"
#include "kernels/quant/types.h"

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

// A backend weight of `rows` x `cols` random values through the type's reference quantizer
// (F32: the values themselves).
std::unique_ptr<Weight> RandomWeight(CpuBackend* backend, GgmlType type, int64_t rows,
                                     int64_t cols, std::mt19937* rng,
                                     std::vector<std::vector<uint8_t>>* keep) {
  const QuantTraits* traits = FindQuantTraits(type);
  const int64_t row_bytes = *RowBytes(*traits, cols);
  keep->emplace_back(static_cast<size_t>(rows * row_bytes));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(*rng);
    traits->quantize_ref(row.data(), keep->back().data() + r * row_bytes, cols);
  }
  QuantMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = row_bytes;
  m.data = keep->back().data();
  absl::StatusOr<std::unique_ptr<Weight>> w = backend->LoadWeight(m);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *std::move(w) : nullptr;
}

// Every batch size class (one row, the caller's quantization, the threads', the tiled panels)
// on one and two threads, with the backend's own weight layout and with GGUF rows in place.
TEST(CpuFusedOpsTest, SameBitsAsTheSeparateOps) {
  constexpr int64_t kDim = 256, kFf = 512;
  for (const GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_K,
                              GgmlType::kF32}) {
    for (const bool copy_weights : {true, false}) {
      for (const int threads : {1, 2}) {
        CpuBackend backend(threads, /*exact_matmul=*/false, copy_weights);
        std::mt19937 rng(11);
        std::vector<std::vector<uint8_t>> keep;
        std::unique_ptr<Weight> norm =
            RandomWeight(&backend, GgmlType::kF32, 1, kDim, &rng, &keep);
        std::unique_ptr<Weight> gate_w = RandomWeight(&backend, type, kFf, kDim, &rng, &keep);
        std::unique_ptr<Weight> up_w = RandomWeight(&backend, type, kFf, kDim, &rng, &keep);
        std::unique_ptr<Weight> down_w = RandomWeight(&backend, type, kDim, kFf, &rng, &keep);
        ASSERT_TRUE(norm && gate_w && up_w && down_w);
        for (const int64_t batch : {1, 3, 5, 16, 40}) {
          const bool add = batch % 2 == 1;  // with and without a residual to add first
          SCOPED_TRACE(testing::Message() << GgmlTypeName(type) << (copy_weights ? "" : " in place")
                                          << ", " << threads << " threads, batch " << batch);
          std::normal_distribution<float> normal(0.0f, 3.0f);
          std::vector<float> x(static_cast<size_t>(batch * kDim)), residual(x.size());
          for (float& v : x) v = normal(rng);
          for (float& v : residual) v = normal(rng);
          const std::vector<float> x_in = x;
          // Separate ops.
          std::vector<float> h(x.size()), gate(static_cast<size_t>(batch * kFf)), up(gate.size());
          std::vector<float> y(x.size());
          const Backend::MatMulOut outs[] = {{gate_w.get(), gate.data()}, {up_w.get(), up.data()}};
          if (add) {
            ASSERT_TRUE(backend.Add(x.data(), residual.data(), batch * kDim).ok());
          }
          ASSERT_TRUE(backend.RmsNorm(x.data(), *norm, batch, 1e-5f, h.data()).ok());
          ASSERT_TRUE(backend.MatMuls(h.data(), batch, outs, 2).ok());
          std::vector<float> act(gate.size());
          ASSERT_TRUE(backend.SwiGlu(gate.data(), up.data(), batch * kFf, act.data()).ok());
          ASSERT_TRUE(backend.MatMul(*down_w, act.data(), batch, y.data()).ok());
          // Fused.
          std::vector<float> h2(x.size(), -1.0f), gate2(gate.size(), -1.0f), up2(up.size());
          std::vector<float> y2(y.size(), -1.0f);
          const Backend::MatMulOut outs2[] = {{gate_w.get(), gate2.data()},
                                              {up_w.get(), up2.data()}};
          std::vector<float> x2 = x_in;
          ASSERT_TRUE(backend
                          .AddRmsNormMatMuls(x2.data(), add ? residual.data() : nullptr, *norm,
                                             batch, 1e-5f, h2.data(), outs2, 2)
                          .ok());
          EXPECT_EQ(x2, x);
          EXPECT_EQ(h2, h);
          EXPECT_EQ(gate2, gate);
          EXPECT_EQ(up2, up);
          ASSERT_TRUE(
              backend.SwiGluMatMul(*down_w, gate2.data(), up2.data(), batch, y2.data()).ok());
          EXPECT_EQ(gate2, act);  // gate is left holding silu(gate) * up
          EXPECT_EQ(y2, y);
        }
        // A norm that does not match the products' columns is an error, not a misread.
        std::vector<float> x(kFf), h(kFf), out(kFf);
        const Backend::MatMulOut bad[] = {{down_w.get(), out.data()}};
        const absl::Status s =
            backend.AddRmsNormMatMuls(x.data(), nullptr, *norm, 1, 1e-5f, h.data(), bad, 1);
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      }
    }
  }
}

}  // namespace
}  // namespace tessera
