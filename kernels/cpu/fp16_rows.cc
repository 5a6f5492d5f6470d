#include "kernels/cpu/fp16_rows.h"

#include "kernels/cpu/cpu_features.h"
#include "kernels/quant/fp16.h"

namespace tessera {
namespace {

bool HaveF16c() {
  static const bool have = GetCpuFeatures().avx2;  // the AVX2 kernels' flags include F16C
  return have;
}

}  // namespace

void FloatsToFp16(const float* in, int64_t n, uint16_t* out) {
  if (HaveF16c()) return FloatsToFp16F16c(in, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToFp16(in[i]);
}

void Fp16ToFloats(const uint16_t* in, int64_t n, float* out) {
  if (HaveF16c()) return Fp16ToFloatsF16c(in, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = Fp16ToFloat(in[i]);
}

}  // namespace tessera
