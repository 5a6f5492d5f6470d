#include "tests/gpu/gpu_testutil.h"

namespace tessera::testing_util {

std::vector<float> RandomFloats(int64_t n, std::mt19937* rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(*rng);
  return v;
}

std::vector<uint8_t> RandomBlocks(GgmlType type, int64_t rows, int64_t cols, std::mt19937* rng) {
  const QuantTraits* t = FindQuantTraits(type);
  const int64_t row_bytes = *RowBytes(*t, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> w = RandomFloats(cols, rng);
    t->quantize_ref(w.data(), out.data() + r * row_bytes, cols);
  }
  return out;
}

std::unique_ptr<CudaBackend> OpenCuda() {
  auto b = CudaBackend::Create(0);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

std::unique_ptr<DeviceBuffer> ToDevice(Backend* b, const std::vector<float>& host) {
  auto d = b->Allocate(static_cast<int64_t>(host.size()));
  EXPECT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(b->CopyToDevice(host.data(), static_cast<int64_t>(host.size()), (*d)->data()).ok());
  return *std::move(d);
}

std::vector<float> ToHost(Backend* b, DeviceBuffer* d, int64_t n) {
  std::vector<float> host(static_cast<size_t>(n));
  const absl::Status s = b->CopyToHost(d->data(), n, host.data());
  EXPECT_TRUE(s.ok()) << s;
  return host;
}

}  // namespace tessera::testing_util
