// Portable kernels for every type MatMulQ supports: the baseline every SIMD kernel is tested
// against, and what runs on CPUs without AVX2.
//
// The quantized formats are multiplied in integers: a weight block's codes times the int8
// activations, summed exactly in int32, then scaled once by d_weight * d_activation. Offsets
// (Q4_0's -8, Q5_0's -16, Q4_1/Q5_1's min m) are applied once per block to the activation
// sum: sum_k (q_k - 8) a_k = sum_k q_k a_k - 8 * sum_k a_k. Blocks are summed in the
// canonical order of dot_kernels.h (eight chains by block index mod 8, then CombineChains),
// which every SIMD kernel and the tiled GEMM follow too, bit for bit.
#include <cmath>
#include <cstring>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/q5.h"
#include "kernels/quant/q8.h"

namespace tessera {
namespace {

template <typename Block>
Block LoadBlock(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof b);  // weight blocks may sit at any address
  return b;
}

// Dot of 32 codes (element order) with 32 activation codes, exact in int32.
int32_t Dot32(const int8_t* q, const int8_t* a) {
  int32_t s = 0;
  for (int i = 0; i < 32; ++i) s += q[i] * a[i];
  return s;
}

// Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble (q4.h, q5.h).
void UnpackNibbles(const uint8_t* qs, int8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(qs[j] & 0xF);
    q[j + 16] = static_cast<int8_t>(qs[j] >> 4);
  }
}

// Adds bit j of the little-endian qh as bit 4 of element j.
void AddFifthBits(const uint8_t* qh, int8_t* q) {
  const uint32_t bits = static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
                        static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
  for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(q[j] | (((bits >> j) & 1u) << 4));
}

// Each format decodes a block into codes q (without offset), its scale d and its offset term
// `off`, so that w_k = d * q_k + off for every element: Q4_0 off = -8 d, Q5_0 off = -16 d,
// Q4_1/Q5_1 off = m, Q8_0 off = 0. The block's dot with activations x ~= d_a * a is then
//   d * d_a * (q . a) + off * (d_a * sum a) = d * d_a * (q . a) + off * ds.
struct Decoded {
  int8_t q[32];
  float d;
  float off;
};

struct Q4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kOffset = true;
  static void Decode(const Block& w, Decoded* out) {
    UnpackNibbles(w.qs, out->q);
    out->d = Fp16ToFloat(w.d);
    out->off = -8.0f * out->d;
  }
};

struct Q4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kOffset = true;
  static void Decode(const Block& w, Decoded* out) {
    UnpackNibbles(w.qs, out->q);
    out->d = Fp16ToFloat(w.d);
    out->off = Fp16ToFloat(w.m);
  }
};

struct Q5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kOffset = true;
  static void Decode(const Block& w, Decoded* out) {
    UnpackNibbles(w.qs, out->q);
    AddFifthBits(w.qh, out->q);
    out->d = Fp16ToFloat(w.d);
    out->off = -16.0f * out->d;
  }
};

struct Q5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kOffset = true;
  static void Decode(const Block& w, Decoded* out) {
    UnpackNibbles(w.qs, out->q);
    AddFifthBits(w.qh, out->q);
    out->d = Fp16ToFloat(w.d);
    out->off = Fp16ToFloat(w.m);
  }
};

struct Q8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kOffset = false;
  static void Decode(const Block& w, Decoded* out) {
    std::memcpy(out->q, w.qs, 32);
    out->d = Fp16ToFloat(w.d);
    out->off = 0.0f;
  }
};

template <typename Format>
void RowDotBlock32(const uint8_t* w_row, int64_t n_blocks, const uint8_t* act, int64_t act_stride,
                   int n_act, float* y, int64_t y_stride) {
  using Block = typename Format::Block;
  float chains[kMaxActRows][kSumChains] = {};
  Decoded dec;
  for (int64_t i = 0; i < n_blocks; ++i) {
    Format::Decode(LoadBlock<Block>(w_row + i * sizeof(Block)), &dec);
    for (int b = 0; b < n_act; ++b) {
      const ActRow32 a = ViewActRow32(act + b * act_stride, n_blocks);
      const int32_t dot = Dot32(dec.q, a.qs + 32 * i);
      float t = (dec.d * a.d[i]) * static_cast<float>(dot);
      if (Format::kOffset) t = t + dec.off * a.ds[i];
      chains[b][i % kSumChains] += t;
    }
  }
  for (int b = 0; b < n_act; ++b) y[b * y_stride] = CombineChains(chains[b]);
}

// Float weights: element i of the row is ToFloat(bytes of element i).
struct F32 {
  static float Load(const uint8_t* p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  static constexpr int kBytes = 4;
};
struct F16 {
  static float Load(const uint8_t* p) { return Fp16ToFloat(static_cast<fp16_t>(p[0] | p[1] << 8)); }
  static constexpr int kBytes = 2;
};
struct BF16 {
  static float Load(const uint8_t* p) { return Bf16ToFloat(static_cast<bf16_t>(p[0] | p[1] << 8)); }
  static constexpr int kBytes = 2;
};

// The canonical order of the float formats (dot_kernels.h), as the AVX2 kernel computes it
// with two vectors of fused multiply-adds; std::fma rounds once, like vfmadd.
template <typename Format>
void RowDotFloat(const uint8_t* w_row, int64_t n, const uint8_t* act, int64_t act_stride, int n_act,
                 float* y, int64_t y_stride) {
  auto w = [&](int64_t i) { return Format::Load(w_row + i * Format::kBytes); };
  for (int b = 0; b < n_act; ++b) {
    const auto* x = reinterpret_cast<const float*>(act + b * act_stride);
    float lanes[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (int l = 0; l < 16; ++l) lanes[l] = std::fma(w(i + l), x[i + l], lanes[l]);
    }
    for (; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) lanes[l] = std::fma(w(i + l), x[i + l], lanes[l]);
    }
    float chains[kSumChains];
    for (int l = 0; l < kSumChains; ++l) chains[l] = lanes[l] + lanes[l + 8];
    float sum = CombineChains(chains);
    for (; i < n; ++i) sum += w(i) * x[i];
    y[b * y_stride] = sum;
  }
}

}  // namespace

RowDotFn ScalarRowDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return RowDotBlock32<Q4_0>;
    case GgmlType::kQ4_1:
      return RowDotBlock32<Q4_1>;
    case GgmlType::kQ5_0:
      return RowDotBlock32<Q5_0>;
    case GgmlType::kQ5_1:
      return RowDotBlock32<Q5_1>;
    case GgmlType::kQ8_0:
      return RowDotBlock32<Q8_0>;
    case GgmlType::kF32:
      return RowDotFloat<F32>;
    case GgmlType::kF16:
      return RowDotFloat<F16>;
    case GgmlType::kBF16:
      return RowDotFloat<BF16>;
    default:
      return ScalarKQuantRowDot(type);
  }
}

}  // namespace tessera
