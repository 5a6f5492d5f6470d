#include "tests/kernels/matmul_testutil.h"

#include <cmath>
#include <memory>

#include "kernels/quant/kquants.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"

namespace tessera {

std::vector<CpuIsa> AvailableIsas(bool simd_only) {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : kAllIsas) {
    if (simd_only && isa == CpuIsa::kScalar) continue;
    if (CpuIsaAvailable(isa)) out.push_back(isa);
  }
  return out;
}

ThreadPool* TestPool(int n_threads) {
  static auto* pools = new std::vector<std::unique_ptr<ThreadPool>>(16);
  auto& p = (*pools)[static_cast<size_t>(n_threads)];
  if (p == nullptr) p = std::make_unique<ThreadPool>(n_threads);
  return p.get();
}

std::vector<float> RunMatMul(const QuantMatrix& w, const std::vector<float>& x, int64_t n_batch,
                             int n_threads, CpuIsa isa, int64_t gemm_min_batch) {
  std::vector<float> y(static_cast<size_t>(n_batch * w.rows), std::nanf(""));
  MatMulScratch scratch;
  MatMulOptions options;
  options.isa = isa;
  options.gemm_min_batch = gemm_min_batch;
  const absl::Status st =
      MatMulQ(w, x.data(), n_batch, y.data(), TestPool(n_threads), &scratch, options);
  EXPECT_TRUE(st.ok()) << st;
  return y;
}

bool IsFloatType(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}

std::vector<size_t> ScaleOffsets(GgmlType t) {
  switch (t) {
    case GgmlType::kQ4_0:
      return {offsetof(BlockQ4_0, d)};
    case GgmlType::kQ4_1:
      return {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
    case GgmlType::kQ5_0:
      return {offsetof(BlockQ5_0, d)};
    case GgmlType::kQ5_1:
      return {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
    case GgmlType::kQ8_0:
      return {offsetof(BlockQ8_0, d)};
    case GgmlType::kQ2_K:
      return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case GgmlType::kQ3_K:
      return {offsetof(BlockQ3_K, d)};
    case GgmlType::kQ4_K:
      return {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)};
    case GgmlType::kQ5_K:
      return {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)};
    case GgmlType::kQ6_K:
      return {offsetof(BlockQ6_K, d)};
    default:
      return {};
  }
}

std::string TypeName(const testing::TestParamInfo<GgmlType>& info) {
  return GgmlTypeName(info.param);
}

}  // namespace tessera
