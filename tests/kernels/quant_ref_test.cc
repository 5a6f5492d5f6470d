// Reference quant code of kernels/quant/: fp16/bf16 conversions against independent
// references (double-precision math written here, and the compiler's _Float16), the registry
// table against ggml's published block geometry, and each format's round-trip error against
// bounds derived in float64 from the format's definition.
//
// Bit-exactness with the PyPI gguf package is checked by tests/python/test_quant_formats.py;
// this binary also runs under the sanitizers (unaligned rows, out-of-range shifts, overflow).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

// ---------------------------------------------------------------------------------------------
// fp16 / bf16: references in double precision. Every binary16/bfloat16 value and every midpoint
// between neighbours is a dyadic rational that double holds exactly, so these are exact.

// Value of a finite binary16 pattern: 2^-24 * m (subnormal) or 2^(e-25) * (1024 + m).
double Fp16Value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

// Value of a bfloat16 pattern (magnitude code 0x7f80 gives 2^128, the rounding limit).
double Bf16Value(uint16_t b) {
  const int e = (b >> 7) & 255, m = b & 127;
  const double v = e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134);
  return (b & 0x8000) ? -v : v;
}

bool IsNanFp16(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
bool IsNanBf16(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

// Round a to nearest among magnitude codes [0, max_code] with values value(code) increasing,
// ties to the even code; overflow_code if a >= the midpoint above the largest finite value.
template <typename ValueFn>
uint16_t NearestCode(double a, uint16_t max_code, ValueFn value) {
  // Binary search the largest code with value <= a.
  int lo = 0, hi = max_code;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (value(static_cast<uint16_t>(mid)) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  const double below = value(static_cast<uint16_t>(lo));
  const double above = value(static_cast<uint16_t>(lo + 1));  // max_code + 1 is inf's code
  if (a - below < above - a) return static_cast<uint16_t>(lo);
  if (a - below > above - a) return static_cast<uint16_t>(lo + 1);
  return static_cast<uint16_t>((lo & 1) ? lo + 1 : lo);
}

uint16_t ReferenceToFp16(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  // Above the largest finite value 65504 the next step would be 65536 (code 0x7c00 = inf).
  auto value = [](uint16_t c) { return c == 0x7c00 ? 65536.0 : Fp16Value(c); };
  if (a >= 65536.0) return sign | 0x7c00;
  return sign | NearestCode(a, 0x7bff, value);
}

uint16_t ReferenceToBf16(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (std::isinf(f)) return sign | 0x7f80;
  return sign | NearestCode(a, 0x7f7f, Bf16Value);
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t ToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Float32 inputs around every rounding decision of a 16-bit format: each representable value
// and each midpoint between neighbours, one float32 ulp either side, both signs; plus random
// bit patterns over the whole range.
std::vector<float> BoundaryInputs(double (*value)(uint16_t), uint16_t max_code) {
  std::vector<float> in;
  auto add_around = [&](float v) {
    for (float s : {1.0f, -1.0f}) {
      in.push_back(s * v);
      in.push_back(s * std::nextafter(v, 0.0f));
      in.push_back(s * std::nextafter(v, std::numeric_limits<float>::infinity()));
    }
  };
  for (int c = 0; c <= max_code; ++c) {
    add_around(static_cast<float>(value(static_cast<uint16_t>(c))));
    const double next = c == max_code ? 2 * value(static_cast<uint16_t>(c)) - value(c - 1)
                                      : value(static_cast<uint16_t>(c + 1));
    const double mid = (value(static_cast<uint16_t>(c)) + next) / 2;  // exact in float32...
    if (mid <= std::numeric_limits<float>::max())
      add_around(static_cast<float>(mid));  // ...if finite
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) in.push_back(FromBits(static_cast<uint32_t>(rng())));
  return in;
}

TEST(Fp16Test, EveryHalfDecodesToItsExactValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFloat(static_cast<fp16_t>(h));
    if (IsNanFp16(static_cast<uint16_t>(h))) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;
    } else if ((h & 0x7fff) == 0x7c00) {
      EXPECT_EQ(f, (h & 0x8000) ? -INFINITY : INFINITY) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), Fp16Value(static_cast<uint16_t>(h))) << std::hex << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;  // -0 stays -0
    }
  }
}

TEST(Fp16Test, EncodeRoundsToNearestEvenAtEveryBoundary) {
  for (float f : BoundaryInputs(Fp16Value, 0x7bff)) {
    const fp16_t h = FloatToFp16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(IsNanFp16(h)) << f;
      EXPECT_EQ((h & 0x8000) != 0, std::signbit(f));
      continue;
    }
    ASSERT_EQ(h, ReferenceToFp16(f)) << std::hexfloat << f << " bits " << std::hex << ToBits(f);
  }
}

#if defined(__FLT16_MAX__)
// A second, unrelated reference: the compiler's own binary16 conversions.
TEST(Fp16Test, AgreesWithCompilerFloat16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (IsNanFp16(static_cast<uint16_t>(h))) continue;
    _Float16 v;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&v, &bits, sizeof v);
    ASSERT_EQ(ToBits(static_cast<float>(v)), ToBits(Fp16ToFloat(bits))) << std::hex << h;
  }
  for (float f : BoundaryInputs(Fp16Value, 0x7bff)) {
    if (std::isnan(f)) continue;
    const _Float16 v = static_cast<_Float16>(f);
    uint16_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    ASSERT_EQ(FloatToFp16(f), bits) << std::hexfloat << f;
  }
}
#endif

TEST(Bf16Test, EveryBf16DecodesToItsExactValue) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = Bf16ToFloat(static_cast<bf16_t>(b));
    if (IsNanBf16(static_cast<uint16_t>(b))) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << b;
    } else if ((b & 0x7fff) == 0x7f80) {
      EXPECT_EQ(f, (b & 0x8000) ? -INFINITY : INFINITY);
    } else {
      ASSERT_EQ(static_cast<double>(f), Bf16Value(static_cast<uint16_t>(b))) << std::hex << b;
      ASSERT_EQ(std::signbit(f), (b & 0x8000) != 0) << std::hex << b;
    }
  }
}

TEST(Bf16Test, EncodeRoundsToNearestEvenAndQuietsNan) {
  std::vector<float> in = BoundaryInputs(Bf16Value, 0x7f7f);
  for (uint32_t hi = 0; hi < 65536; hi += 257) {  // low halves at and around the tie 0x8000
    for (uint32_t lo : {0u, 1u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      in.push_back(FromBits(hi << 16 | lo));
    }
  }
  for (float f : in) {
    const bf16_t b = FloatToBf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(IsNanBf16(b)) << std::hex << ToBits(f);
      EXPECT_TRUE(b & 0x40) << "quiet bit set for " << std::hex << ToBits(f);
      EXPECT_EQ((b & 0x8000) != 0, std::signbit(f));
      continue;
    }
    ASSERT_EQ(b, ReferenceToBf16(f)) << std::hexfloat << f << " bits " << std::hex << ToBits(f);
  }
}

// ---------------------------------------------------------------------------------------------
// Registry.

struct Geometry {
  GgmlType type;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
};
// ggml's published block geometry (GGML_QUANT_SIZES in the gguf package).
constexpr Geometry kExpected[] = {
    {GgmlType::kF32, "F32", 1, 4},       {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},   {GgmlType::kQ4_1, "Q4_1", 32, 20},
    {GgmlType::kQ5_0, "Q5_0", 32, 22},   {GgmlType::kQ5_1, "Q5_1", 32, 24},
    {GgmlType::kQ8_0, "Q8_0", 32, 34},   {GgmlType::kQ2_K, "Q2_K", 256, 84},
    {GgmlType::kQ3_K, "Q3_K", 256, 110}, {GgmlType::kQ4_K, "Q4_K", 256, 144},
    {GgmlType::kQ5_K, "Q5_K", 256, 176}, {GgmlType::kQ6_K, "Q6_K", 256, 210},
    {GgmlType::kBF16, "BF16", 1, 2},
};

TEST(QuantRegistryTest, EveryFormatHasGgmlGeometryAndBothConversions) {
  int count = 0;
  const QuantTraits* const* all = AllQuantTraits(&count);
  ASSERT_EQ(count, static_cast<int>(std::size(kExpected)));
  for (int i = 0; i < count; ++i) {
    const QuantTraits& t = *all[i];
    const Geometry& g = kExpected[i];  // both in id order
    SCOPED_TRACE(g.name);
    EXPECT_EQ(t.type, g.type);
    EXPECT_STREQ(t.name, g.name);
    EXPECT_EQ(t.block_elems, g.block_elems);
    EXPECT_EQ(t.block_bytes, g.block_bytes);
    EXPECT_NE(t.dequantize_ref, nullptr);
    EXPECT_NE(t.quantize_ref, nullptr);
    EXPECT_EQ(FindQuantTraits(t.type), &t);
    EXPECT_EQ(GgmlTypeName(t.type), g.name);
    if (i > 0) {
      EXPECT_LT(static_cast<uint32_t>(all[i - 1]->type), static_cast<uint32_t>(t.type));
    }

    absl::StatusOr<GgmlType> parsed = ParseGgmlType(std::string(g.name));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, g.type);
    std::string lower = g.name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    parsed = ParseGgmlType(lower);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, g.type);

    absl::StatusOr<int64_t> bytes = RowBytes(t, 3 * g.block_elems);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, 3 * g.block_bytes);
    EXPECT_EQ(*RowBytes(t, 0), 0);
    EXPECT_FALSE(RowBytes(t, -g.block_elems).ok());
    if (g.block_elems > 1) {
      absl::StatusOr<int64_t> partial = RowBytes(t, 3 * g.block_elems + 1);
      ASSERT_FALSE(partial.ok());
      EXPECT_EQ(partial.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(partial.status().message().find(g.name), std::string::npos)
          << partial.status().message();
    }
  }
}

TEST(QuantRegistryTest, UnknownAndUnsupportedIds) {
  EXPECT_EQ(FindQuantTraits(4u), nullptr);               // retired Q4_2
  EXPECT_EQ(FindQuantTraits(GgmlType::kQ8_1), nullptr);  // known to ggml, not loadable
  EXPECT_EQ(FindQuantTraits(GgmlType::kQ8_K), nullptr);
  EXPECT_EQ(FindQuantTraits(100000u), nullptr);
  EXPECT_EQ(GgmlTypeName(4u), "unknown(4)");
  EXPECT_EQ(GgmlTypeName(16u), "IQ2_XXS");
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ8_K), "Q8_K");
  EXPECT_EQ(GgmlTypeName(kMaxKnownGgmlTypeId + 1), "unknown(42)");
  absl::StatusOr<GgmlType> bad = ParseGgmlType("q4_9");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("q4_9"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("Q6_K"), std::string::npos) << bad.status();
  EXPECT_FALSE(ParseGgmlType("").ok());
  EXPECT_FALSE(ParseGgmlType("Q8_1").ok());
}

// ---------------------------------------------------------------------------------------------
// Round trips: quantize_ref then dequantize_ref, errors measured in double.

std::vector<float> Gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

// Runs the round trip through rows that start one byte past an aligned address, so that any
// unaligned access the sanitizers dislike shows up.
std::vector<float> RoundTrip(const QuantTraits& t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> storage(static_cast<size_t>(*RowBytes(t, n)) + 1);
  t.quantize_ref(x.data(), storage.data() + 1, n);
  std::vector<float> y(x.size());
  t.dequantize_ref(storage.data() + 1, y.data(), n);
  return y;
}

double RelativeRms(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
    ref += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

// Relative RMS round-trip error bounds on N(0, 1) data, ~8 % above the values measured with
// this data (Q4_0 0.086, Q4_1 0.078, Q5_0 0.043, Q5_1 0.038, Q8_0 0.0054; the k-quants' figures
// are in their .cc files). F16/BF16: half an ulp relative, 2^-11 and 2^-8.
struct RmsBound {
  GgmlType type;
  double bound;
};
constexpr RmsBound kRmsBounds[] = {
    {GgmlType::kF32, 0.0},     {GgmlType::kF16, 0.00049}, {GgmlType::kBF16, 0.0039},
    {GgmlType::kQ4_0, 0.093},  {GgmlType::kQ4_1, 0.085},  {GgmlType::kQ5_0, 0.047},
    {GgmlType::kQ5_1, 0.042},  {GgmlType::kQ8_0, 0.0059}, {GgmlType::kQ2_K, 0.29},
    {GgmlType::kQ3_K, 0.155},  {GgmlType::kQ4_K, 0.078},  {GgmlType::kQ5_K, 0.039},
    {GgmlType::kQ6_K, 0.0183},
};

TEST(QuantRoundTripTest, RelativeRmsErrorWithinFormatBound) {
  const std::vector<float> x = Gaussian(64 * kQK_K, 1);
  for (const RmsBound& b : kRmsBounds) {
    const QuantTraits& t = *FindQuantTraits(b.type);
    const double rel = RelativeRms(x, RoundTrip(t, x));
    EXPECT_LE(rel, b.bound) << t.name;
    if (b.bound > 0) {
      EXPECT_GT(rel, b.bound / 4) << t.name << ": suspiciously exact";
    }
  }
}

TEST(QuantRoundTripTest, ZeroRowsStayZero) {
  const std::vector<float> zeros(4 * kQK_K, 0.0f);
  int count = 0;
  const QuantTraits* const* all = AllQuantTraits(&count);
  for (int i = 0; i < count; ++i) {
    for (float v : RoundTrip(*all[i], zeros)) ASSERT_EQ(v, 0.0f) << all[i]->name;
  }
}

// Largest error of rounding v to fp16: half an ulp, 2^-11 relative for normal values and
// 2^-25 absolute in the subnormal range (|v| < 2^-14).
double Fp16Error(double v) { return std::max(std::fabs(v) * 0x1p-11, 0x1p-25); }

// Per-element error bounds of the 32-weight formats, derived in double from each block's
// statistics and the format's definition (codes rounded to nearest from the float32 scale,
// which is then stored rounded to fp16; float32 arithmetic adds a relative 1e-6 at most):
//   Q8_0: d = amax/127; |x - w| <= d/2 + 127 Fp16Error(d).
//   Q4_0 / Q5_0: |d| = amax/N (N = 8, 16), the extreme element at code -N; the code for +amax
//     is one short (N - 1), so elements above (N - 1/2)|d| may be off by up to |d|, all others
//     by |d|/2; plus N Fp16Error(d).
//   Q4_1 / Q5_1: d = (max - min)/M (M = 15, 31); |x - w| <= d/2 + M Fp16Error(d)
//     + Fp16Error(min).
double ElementBound(GgmlType type, const float* x, float xi) {
  double amax = 0, signed_max = 0, lo = x[0], hi = x[0];
  for (int j = 0; j < 32; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      signed_max = x[j];
    }
    lo = std::min<double>(lo, x[j]);
    hi = std::max<double>(hi, x[j]);
  }
  const double arith = 1e-6 * (amax + std::fabs(xi)) + 1e-30;
  switch (type) {
    case GgmlType::kQ8_0: {
      const double d = amax / 127;
      return 0.5 * d + 127 * Fp16Error(d) + arith;
    }
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0: {
      const double n = type == GgmlType::kQ4_0 ? 8 : 16;
      const double d = amax / n;
      // x / d in the sign convention where the extreme element maps to -n.
      const bool clipped = -xi / signed_max * n > n - 0.5;
      return (clipped ? 1.0 : 0.5) * d + n * Fp16Error(d) + arith;
    }
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1: {
      const double m = type == GgmlType::kQ4_1 ? 15 : 31;
      const double d = (hi - lo) / m;
      return 0.5 * d + m * Fp16Error(d) + Fp16Error(lo) + arith;
    }
    default:
      return 0;
  }
}

TEST(QuantRoundTripTest, SmallBlockFormatsMeetPerElementBounds) {
  // Blocks of varied magnitude and offset.
  std::vector<float> x = Gaussian(512 * 32, 2);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exponent(-4.0f, 3.0f), offset(-2.0f, 2.0f);
  for (size_t b = 0; b < x.size() / 32; ++b) {
    const float scale = std::pow(10.0f, exponent(rng));
    const float shift = b % 3 == 0 ? offset(rng) : 0.0f;
    for (int j = 0; j < 32; ++j) x[b * 32 + j] = (x[b * 32 + j] + shift) * scale;
  }
  for (GgmlType type :
       {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0}) {
    const QuantTraits& t = *FindQuantTraits(type);
    const std::vector<float> y = RoundTrip(t, x);
    for (size_t i = 0; i < x.size(); ++i) {
      const float* block = &x[i / 32 * 32];
      ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), ElementBound(type, block, x[i]))
          << t.name << " element " << i << ": x " << x[i] << " -> " << y[i];
    }
  }
}

TEST(QuantRoundTripTest, FloatFormatsAreCorrectlyRounded) {
  const std::vector<float> x = Gaussian(4096, 4);
  const std::vector<float> f32 = RoundTrip(*FindQuantTraits(GgmlType::kF32), x);
  const std::vector<float> f16 = RoundTrip(*FindQuantTraits(GgmlType::kF16), x);
  const std::vector<float> bf16 = RoundTrip(*FindQuantTraits(GgmlType::kBF16), x);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(ToBits(f32[i]), ToBits(x[i]));
    ASSERT_EQ(static_cast<double>(f16[i]), Fp16Value(ReferenceToFp16(x[i]))) << x[i];
    ASSERT_EQ(static_cast<double>(bf16[i]), Bf16Value(ReferenceToBf16(x[i]))) << x[i];
  }
}

TEST(QuantRoundTripTest, KQuantConstantSuperBlocksAreNearlyExact) {
  // A constant super-block is representable up to the fp16 rounding of the super-scale and the
  // sub-scale code: a few 1e-4 relative (symmetric formats hit it with the largest code).
  // Magnitudes are chosen so that the super-scales stay normal fp16 numbers.
  for (GgmlType type :
       {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (float c : {0.75f, -2.0f, 0.25f, 300.0f}) {
      const std::vector<float> x(kQK_K, c);
      for (float y : RoundTrip(t, x)) {
        ASSERT_NEAR(y, c, 2e-3 * std::fabs(c)) << t.name << " constant " << c;
      }
    }
  }
}

}  // namespace
}  // namespace tessera
