// Scale fitting for the reference k-quant quantizers. Sums run in double so that the result
// does not depend on summation order subtleties; everything is deterministic.
#include "kernels/quant/kquant_fit.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace tessera {
namespace {

// Candidate step counts nmax + t / 10 for t in [-kSearch, kSearch].
constexpr int kSearch = 10;

// Squared error of x ~= a * q - m with each q the nearest code in [0, nmax].
double AffineError(const float* x, int n, int nmax, double a, double m) {
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    const int q = a > 0.0 ? RoundClamp(static_cast<float>((x[i] + m) / a), 0, nmax) : 0;
    const double e = x[i] - (a * q - m);
    err += e * e;
  }
  return err;
}

// Squared error of x ~= a * q with each q the nearest code in [-nneg, nneg - 1].
double SignedError(const float* x, int n, int nneg, double a) {
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    const int q = a != 0.0 ? RoundClamp(static_cast<float>(x[i] / a), -nneg, nneg - 1) : 0;
    const double e = x[i] - a * q;
    err += e * e;
  }
  return err;
}

}  // namespace

int RoundClamp(float v, int lo, int hi) {
  if (std::isnan(v)) v = 0.0f;
  if (v <= static_cast<float>(lo)) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::round(v));
}

ScaleMin FitScaleMin(const float* x, int n, int nmax) {
  float lo = x[0];
  float hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);             // the offset can only lower values: min = -lo >= 0
  if (!(hi > lo)) return {0.0f, -lo};  // constant non-positive sub-block (or non-finite input)

  const double range = static_cast<double>(hi) - lo;
  double best_a = range / nmax;
  double best_m = -static_cast<double>(lo);
  double best_err = AffineError(x, n, nmax, best_a, best_m);
  for (int t = -kSearch; t <= kSearch; ++t) {
    // Codes for a step of range / (nmax + t/10), then the least-squares line through them:
    // minimise sum (x - a q - b)^2 over a, b with b = -min <= 0.
    const double iscale = (nmax + 0.1 * t) / range;
    double sq = 0, sqq = 0, sx = 0, sxq = 0;
    for (int i = 0; i < n; ++i) {
      const int q = RoundClamp(static_cast<float>((x[i] - lo) * iscale), 0, nmax);
      sq += q;
      sqq += static_cast<double>(q) * q;
      sx += x[i];
      sxq += static_cast<double>(x[i]) * q;
    }
    const double det = n * sqq - sq * sq;
    double a = det > 0 ? (n * sxq - sq * sx) / det : 0.0;
    double b = det > 0 ? (sx - a * sq) / n : sx / n;
    if (b > 0) {  // would need a positive offset: pin it at 0 and refit the scale alone
      b = 0;
      a = sqq > 0 ? sxq / sqq : 0.0;
    }
    if (a < 0) {
      a = 0;
      b = std::min(0.0, sx / n);
    }
    const double err = AffineError(x, n, nmax, a, -b);
    if (err < best_err) {
      best_err = err;
      best_a = a;
      best_m = -b;
    }
  }
  return {static_cast<float>(best_a), static_cast<float>(best_m)};
}

float FitSignedScale(const float* x, int n, int nneg) {
  float amax = 0.0f;
  float m = 0.0f;  // signed element of largest magnitude
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  }
  if (amax == 0.0f) return 0.0f;

  double best_a = 0.0;
  double best_err = SignedError(x, n, nneg, 0.0);
  for (const int end : {-nneg, nneg - 1}) {  // m maps near the negative or the positive end
    for (int t = -kSearch; t <= kSearch; ++t) {
      const double steps = end + 0.1 * t * (end < 0 ? -1 : 1);
      if (std::fabs(steps) < 0.5) continue;
      const double iscale = steps / m;
      double sqq = 0, sxq = 0;
      for (int i = 0; i < n; ++i) {
        const int q = RoundClamp(static_cast<float>(x[i] * iscale), -nneg, nneg - 1);
        sqq += static_cast<double>(q) * q;
        sxq += static_cast<double>(x[i]) * q;
      }
      if (sqq == 0) continue;
      const double a = sxq / sqq;  // least-squares scale for these codes
      const double err = SignedError(x, n, nneg, a);
      if (err < best_err) {
        best_err = err;
        best_a = a;
      }
    }
  }
  return static_cast<float>(best_a);
}

fp16_t QuantizeUnsignedScales(const float* v, int n, int cmax, uint8_t* c) {
  float vmax = 0.0f;
  for (int j = 0; j < n; ++j) vmax = std::max(vmax, v[j]);
  const fp16_t d16 = FloatToFp16(vmax / static_cast<float>(cmax));
  const float d = Fp16ToFloat(d16);
  for (int j = 0; j < n; ++j) {
    c[j] = static_cast<uint8_t>(d > 0.0f ? RoundClamp(v[j] / d, 0, cmax) : 0);
  }
  return d16;
}

fp16_t QuantizeSignedScales(const float* v, int n, int cneg, int* c) {
  float amax = 0.0f;
  float m = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(v[j]) > amax) {
      amax = std::fabs(v[j]);
      m = v[j];
    }
  }
  const fp16_t d16 = FloatToFp16(m / static_cast<float>(-cneg));
  const float d = Fp16ToFloat(d16);
  for (int j = 0; j < n; ++j) c[j] = d != 0.0f ? RoundClamp(v[j] / d, -cneg, cneg - 1) : 0;
  return d16;
}

void PackScaleMinK4(const uint8_t* sc, const uint8_t* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

void FitSuperBlockK4(const float* x, int nmax, fp16_t* d, fp16_t* dmin, uint8_t* sc, uint8_t* m,
                     uint8_t* packed) {
  constexpr int kSub = 32, kNumSub = 8;
  float scale[kNumSub], min[kNumSub];
  for (int j = 0; j < kNumSub; ++j) {
    const ScaleMin f = FitScaleMin(x + kSub * j, kSub, nmax);
    scale[j] = f.scale;
    min[j] = f.min;
  }
  *d = QuantizeUnsignedScales(scale, kNumSub, 63, sc);
  *dmin = QuantizeUnsignedScales(min, kNumSub, 63, m);
  PackScaleMinK4(sc, m, packed);
}

}  // namespace tessera
