#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/exp_poly.h"
#include "kernels/cpu/fp16_rows.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/quant/interleave.h"
#include "kernels/quant/types.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

class HostWeight final : public Weight {
 public:
  // A view of the caller's memory (the mmap).
  explicit HostWeight(const QuantMatrix& m) : m_(m) {}
  // A copy of m in the backend's huge-page memory, rows compact (row_bytes apart), in `layout`
  // (kernels/quant/interleave.h); the rows are copied by the pool's threads.
  static absl::StatusOr<std::unique_ptr<HostWeight>> Copy(const QuantMatrix& m, int64_t row_bytes,
                                                          WeightLayout layout,
                                                          HugePageArena* arena, ThreadPool* pool) {
    auto w = std::make_unique<HostWeight>(m);
    const int64_t bytes = m.rows * row_bytes;
    absl::StatusOr<HugePagePiece> piece = arena->Allocate(bytes);
    if (!piece.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          piece.status().message(), " (the backend's copy of a ", m.rows, " x ", m.cols, " ",
          GgmlTypeName(m.type), " weight; TESSERA_CPU_HUGE_PAGES=0 and "
          "TESSERA_CPU_INTERLEAVE=0 keep weights in the mmap)"));
    }
    w->owned_ = *std::move(piece);
    uint8_t* dst = w->owned_.data;
    const int64_t n_blocks = m.cols / FindQuantTraits(m.type)->block_elems;
    const bool striped = layout == WeightLayout::kStripes16;
    pool->Run([&](int thread, int n_threads) {
      int64_t begin, end;
      ThreadPool::Share(m.rows, thread, n_threads, striped ? kStripeRows : 1, &begin, &end);
      for (int64_t r = begin; r < end; r += striped ? kStripeRows : 1) {
        if (striped) {
          StripeRows(m.type, m.row(r), m.row_bytes, n_blocks, dst + r * row_bytes);
        } else if (layout == WeightLayout::kInterleaved8) {
          InterleaveRow(m.type, m.row(r), n_blocks, dst + r * row_bytes);
        } else {
          std::memcpy(dst + r * row_bytes, m.row(r), static_cast<size_t>(row_bytes));
        }
      }
    });
    w->m_.data = dst;
    w->m_.row_bytes = row_bytes;
    w->m_.layout = layout;
    w->bytes_ = bytes;
    return w;
  }
  const QuantMatrix& matrix() const override { return m_; }
  int64_t device_bytes() const override { return bytes_; }  // 0: stays in the mmap

 private:
  QuantMatrix m_;
  HugePagePiece owned_;
  int64_t bytes_ = 0;
};

class HostBuffer final : public DeviceBuffer {
 public:
  explicit HostBuffer(int64_t n) : data_(static_cast<size_t>(n)) {}
  float* data() override { return data_.data(); }
  int64_t n_floats() const override { return static_cast<int64_t>(data_.size()); }

 private:
  std::vector<float> data_;
};

// Attention splits a token's context of 128 positions or more in two chunks (kChunks), the
// first of ChunkPositions(ctx) positions (half the context, rounded up to a multiple of 16),
// so that the threads can share one sequence's K/V rows; shorter ones are one chunk. A function
// of the context alone: how the threads share a step leaves the numbers as they are.
constexpr int kChunks = 2, kMinSplitContext = 128;
int ChunkPositions(int ctx) {
  return ctx < kMinSplitContext ? ctx : (ctx + 2 * 16 - 1) / (2 * 16) * 16;
}
int Chunks(int ctx) { return ctx < kMinSplitContext ? 1 : kChunks; }

// The attention of n query heads from their two chunks' partial softmaxes: head j's part of
// chunk c at parts + c * chunk_floats + j * (hd + 2) (hd sums o_c, then the maximum m_c and
// the sum of the weights l_c), its attention to out + j * hd. In chunk order: with M the larger
// maximum and f_c = exp(m_c - M), out = the sum over c of (f_c / L) o_c, where L = the sum of
// f_c l_c. Cloned like the kernels (the baseline's fused multiply-adds are library calls).
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default"))) void MergeChunks(
    const float* parts, int64_t chunk_floats, int n, int hd, float* __restrict__ out) {
  static_assert(kChunks == 2, "two chunks merged");
  for (int j = 0; j < n; ++j, out += hd) {
    const float* o0 = parts + j * (hd + 2);
    const float* o1 = o0 + chunk_floats;
    const float m = std::max(o0[hd], o1[hd]);
    const float f0 = ExpPoly(o0[hd] - m), f1 = ExpPoly(o1[hd] - m);
    const float total = f0 * o0[hd + 1] + f1 * o1[hd + 1];
    const float w0 = f0 / total, w1 = f1 / total;
#pragma omp simd
    for (int i = 0; i < hd; ++i) {
      out[i] = __builtin_fmaf(w1, o1[i], __builtin_fmaf(w0, o0[i], 0.0f));
    }
  }
}

// One query head's causal attention (attention_kernels.h). target_clones compiles it for
// AVX-512, x86-64-v3 (AVX2 with FMA) and the baseline and picks one at load time from the CPU's
// features (one indirect call per head, not per position). The baseline has no FMA instruction:
// its fused multiply-adds are library calls, exact and slow.
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default"))) void AttendHead(
    const HeadAttention& a) {
  AttendHeadBody(a);
}


__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default"))) void AttendHeads64(
    const HeadAttention* a, int n) {
  switch (n) {
    case 1:
      return AttendHeadsFixed<64, 1>(a);
    case 2:
      return AttendHeadsFixed<64, 2>(a);
    case 3:
      return AttendHeadsFixed<64, 3>(a);
    default:
      return AttendHeadsFixed<64, 4>(a);
  }
}

__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default"))) void AttendHeads128(
    const HeadAttention* a, int n) {
  if (n == 1) return AttendHeadsFixed<128, 1>(a);
  return AttendHeadsFixed<128, 2>(a);
}

bool SameRope(const RopeParams& a, const RopeParams& b) {
  return a.head_dim == b.head_dim && a.rope_dims == b.rope_dims && a.freq_base == b.freq_base &&
         a.scaling_factor == b.scaling_factor && a.low_freq_factor == b.low_freq_factor &&
         a.high_freq_factor == b.high_freq_factor && a.original_context == b.original_context &&
         a.freq_factors == b.freq_factors;
}

}  // namespace

namespace {

// Whether the environment variable `name` leaves a copy enabled: unset or "1" yes, "0" no,
// anything else yes with a warning (once per variable).
bool EnvEnables(const char* name, const char* what) {
  const char* env = std::getenv(name);
  if (env == nullptr || std::strcmp(env, "1") == 0) return true;
  if (std::strcmp(env, "0") == 0) return false;
  static std::mutex mu;
  static std::vector<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (std::find(warned.begin(), warned.end(), name) == warned.end()) {
    warned.emplace_back(name);
    std::fprintf(stderr, "warning: %s=%s is not 0 or 1; %s (the default)\n", name, env, what);
  }
  return true;
}

// Whether this CPU's kernels read the interleaved layout (AVX-512 VNNI's row-dot and tiled
// kernels, AMX's tiles), unless TESSERA_CPU_INTERLEAVE=0 says not to.
bool InterleaveWanted(bool copy_weights) {
  const CpuIsa isa = DetectCpuIsa();
  if (!copy_weights || (isa != CpuIsa::kAvx512Vnni && isa != CpuIsa::kAmx)) return false;
  return EnvEnables("TESSERA_CPU_INTERLEAVE", "Q4_0/Q4_1 weights are interleaved");
}

// Whether Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K matrices of whole stripes take the striped layout: on
// AVX-512 VNNI without AMX (whose tiled prefill reads the interleaved and GGUF rows), unless
// TESSERA_CPU_STRIPES=0.
bool StripesWanted(bool interleave) {
  if (!interleave || DetectCpuIsa() != CpuIsa::kAvx512Vnni) return false;
  return EnvEnables("TESSERA_CPU_STRIPES", "Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K weights are striped");
}

// Whether the other weights are copied into huge pages: where the kernel offers them, unless
// TESSERA_CPU_HUGE_PAGES=0 says not to.
bool HugePagesWanted(bool copy_weights) {
  if (!copy_weights || !TransparentHugePagesAvailable()) return false;
  return EnvEnables("TESSERA_CPU_HUGE_PAGES", "weights are copied into 2 MiB pages");
}

}  // namespace

CpuBackend::CpuBackend(int n_threads, bool exact_matmul, bool copy_weights)
    : pool_(std::max(1, n_threads)),
      exact_matmul_(exact_matmul),
      interleave_(InterleaveWanted(copy_weights)),
      stripes_(StripesWanted(interleave_)),
      huge_pages_(HugePagesWanted(copy_weights)) {}

void CpuBackend::ParallelFor(int64_t n, int64_t granule, int64_t min_parallel,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n < min_parallel || pool_.size() == 1) {
    fn(0, n);
    return;
  }
  pool_.Run([&](int thread, int n_threads) {
    int64_t begin, end;
    ThreadPool::Share(n, thread, n_threads, granule, &begin, &end);
    if (begin < end) fn(begin, end);
  });
}

std::string CpuBackend::name() const {
  return absl::StrCat("cpu (", std::string(CpuIsaName(DetectCpuIsa())), ", ", pool_.size(),
                      " threads",
                      stripes_      ? ", Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K striped"
                      : interleave_ ? ", Q4_0/Q4_1 interleaved"
                                    : "",
                      huge_pages_ ? ", weights in 2 MiB pages" : "", ")");
}

absl::StatusOr<std::unique_ptr<Weight>> CpuBackend::LoadWeight(const QuantMatrix& host) {
  const QuantTraits* traits = FindQuantTraits(host.type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight type ", GgmlTypeName(host.type), " is not supported"));
  }
  absl::StatusOr<int64_t> row_bytes = RowBytes(*traits, host.cols);
  if (!row_bytes.ok()) return row_bytes.status();
  if (host.row_bytes < *row_bytes || host.rows < 1 || host.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("malformed ", traits->name, " weight: rows=",
                                                   host.rows, " cols=", host.cols,
                                                   " row_bytes=", host.row_bytes));
  }
  if (host.layout != WeightLayout::kGguf) return std::make_unique<HostWeight>(host);
  WeightLayout layout = WeightLayout::kGguf;
  if (stripes_ && StripeSupported(host.type) && host.rows % kStripeRows == 0) {
    layout = WeightLayout::kStripes16;
  } else if (interleave_ && InterleaveSupported(host.type) &&
             host.cols >= kInterleaveBlocks * traits->block_elems) {
    layout = WeightLayout::kInterleaved8;
  }
  if (layout != WeightLayout::kGguf || huge_pages_) {
    TESSERA_ASSIGN_OR_RETURN(
        std::unique_ptr<HostWeight> w,
        HostWeight::Copy(host, *row_bytes, layout, &weight_memory_, &pool_));
    return std::unique_ptr<Weight>(std::move(w));
  }
  return std::make_unique<HostWeight>(host);
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CpuBackend::Allocate(int64_t n_floats) {
  if (n_floats < 0) return absl::InvalidArgumentError("negative buffer size");
  return std::make_unique<HostBuffer>(n_floats);
}

absl::Status CpuBackend::AllocateKvCache(const KvLayout& layout) {
  if (layout.n_layers <= 0 || layout.n_kv_heads <= 0 || layout.head_dim <= 0 ||
      layout.block_tokens <= 0 || layout.n_blocks <= 0) {
    return absl::InvalidArgumentError("KV cache layout has a non-positive dimension");
  }
  kv_layout_ = layout;
  // 2 MiB pages: a decode step streams every sequence's cache (huge_pages.h says why). Fresh
  // anonymous memory reads as zeros.
  kv_.reset();
  absl::StatusOr<std::shared_ptr<HugePageMapping>> kv = HugePageMapping::Create(layout.bytes());
  if (!kv.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(kv.status().message(), " (the KV cache of ", layout.n_blocks, " blocks)"));
  }
  kv_ = *std::move(kv);
  return absl::OkStatus();
}

KvType CpuBackend::PreferredKvTypeFor(bool exact_matmul) {
  return !exact_matmul && GetCpuFeatures().avx512 ? KvType::kF16 : KvType::kF32;
}

absl::Status CpuBackend::CopyToHost(const float* device, int64_t n, float* host) {
  std::memcpy(host, device, static_cast<size_t>(n) * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToDevice(const float* host, int64_t n, float* device) {
  std::memcpy(device, host, static_cast<size_t>(n) * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuBackend::Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                               float* out) {
  const QuantMatrix& m = table.matrix();
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= m.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", ids[t], " is outside the vocabulary (", m.rows, " tokens)"));
    }
    DequantizeMatrixRow(m, ids[t], out + t * m.cols);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  if (exact_matmul_) return ExactMatMul(w.matrix(), x, n_tokens, y);
  return MatMulQ(w.matrix(), x, n_tokens, y, &pool_, &scratch_);
}

absl::Status CpuBackend::MatMuls(const float* x, int64_t n_tokens, const MatMulOut* outs,
                                int n_outs) {
  if (exact_matmul_ || n_outs > kMaxMatMulProducts) {
    return Backend::MatMuls(x, n_tokens, outs, n_outs);
  }
  MatMulProduct products[kMaxMatMulProducts];
  for (int i = 0; i < n_outs; ++i) products[i] = {&outs[i].w->matrix(), outs[i].y};
  return MatMulQMany(products, n_outs, x, n_tokens, &pool_, &scratch_);
}

absl::Status CpuBackend::ExactMatMul(const QuantMatrix& w, const float* x, int64_t n_tokens,
                                     float* y) {
  const QuantTraits* traits = FindQuantTraits(w.type);
  if (traits == nullptr) return absl::InvalidArgumentError("unsupported weight type");
  pool_.Run([&](int thread, int n_threads) {
    int64_t begin, end;
    ThreadPool::Share(w.rows, thread, n_threads, 1, &begin, &end);
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = begin; r < end; ++r) {
      DequantizeMatrixRow(w, r, row.data());
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * w.cols;
        double acc = 0.0;
        for (int64_t i = 0; i < w.cols; ++i) acc += static_cast<double>(row[i]) * xt[i];
        y[t * w.rows + r] = static_cast<float>(acc);
      }
    }
  });
  return absl::OkStatus();
}

namespace {

// The sum of x[i]^2 in double (each square exact): eight accumulators, lane j taking elements
// j, j + 8, ..., then a fixed tree; the same order, so the same bits, on every clone. One
// chain of dependent adds made a norm of 576 elements cost ~0.7 us, 16 tokens' norms 5-11 us per
// layer.
__attribute__((target_clones("avx512f", "avx2", "default"))) double SumSquares(const float* x,
                                                                              int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]) * x[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += static_cast<double>(x[i]) * x[i];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// x += y, elementwise.
void AddSpan(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

// One row of RmsNorm: y = x / sqrt(mean(x^2) + eps) * g (y may alias x).
void RmsNormRow(const float* x, const float* g, int64_t dim, float eps, float* y) {
  const double sum_sq = SumSquares(x, dim);
  const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq / dim + eps));
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * scale * g[i];
}

// The gains of an RMSNorm weight (F32, any shape: rows * cols elements, one per dimension).
absl::StatusOr<absl::Span<const float>> NormGains(const Weight& weight) {
  const QuantMatrix& m = weight.matrix();
  if (m.type != GgmlType::kF32) {
    return absl::InvalidArgumentError("RMSNorm weight must be F32");
  }
  return absl::MakeConstSpan(static_cast<const float*>(m.data), m.rows * m.cols);
}

}  // namespace

absl::Status CpuBackend::RmsNorm(const float* x, const Weight& weight, int64_t n_tokens,
                                 float eps, float* y) {
  TESSERA_ASSIGN_OR_RETURN(const absl::Span<const float> g, NormGains(weight));
  const auto dim = static_cast<int64_t>(g.size());
  ParallelFor(n_tokens, 1, 2, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      RmsNormRow(x + t * dim, g.data(), dim, eps, y + t * dim);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::AddRmsNormMatMuls(float* x, const float* residual, const Weight& norm,
                                           int64_t n_tokens, float eps, float* h,
                                           const MatMulOut* outs, int n_outs) {
  if (exact_matmul_ || n_outs < 1 || n_outs > kMaxMatMulProducts) {
    return Backend::AddRmsNormMatMuls(x, residual, norm, n_tokens, eps, h, outs, n_outs);
  }
  TESSERA_ASSIGN_OR_RETURN(const absl::Span<const float> g, NormGains(norm));
  const auto dim = static_cast<int64_t>(g.size());
  if (outs[0].w->matrix().cols != dim) {
    return absl::InvalidArgumentError(absl::StrCat("RMSNorm of ", dim, " elements before a ",
                                                   "product of ", outs[0].w->matrix().cols,
                                                   " columns"));
  }
  MatMulProduct products[kMaxMatMulProducts];
  for (int i = 0; i < n_outs; ++i) products[i] = {&outs[i].w->matrix(), outs[i].y};
  auto norm_row = [&](int64_t t) {
    float* xt = x + t * dim;
    if (residual != nullptr) AddSpan(xt, residual + t * dim, dim);
    RmsNormRow(xt, g.data(), dim, eps, h + t * dim);
  };
  const PrepareRowFn prepare = norm_row;  // refers to norm_row, which outlives the call
  return MatMulQMany(products, n_outs, h, n_tokens, &pool_, &scratch_, MatMulOptions(),
                     &prepare);
}

absl::Status CpuBackend::Rope(float* x, int64_t n_tokens, int n_heads, const int32_t* positions,
                              const RopeParams& params) {
  TESSERA_RETURN_IF_ERROR(CheckRopeParams(params));
  const int half = params.rope_dims / 2;
  // The cos and sin of each (token, pair) angle: the same for every layer of a step (and for
  // its Q and K), so they are computed once per step's positions and kept.
  const bool same_positions =
      static_cast<int64_t>(rope_positions_.size()) == n_tokens &&
      std::equal(positions, positions + n_tokens, rope_positions_.begin());
  const bool same_params = !rope_cache_.empty() && SameRope(params, rope_cache_params_);
  if (!same_params) {
    rope_cache_ = RopeFrequencies(params);
    rope_cache_params_ = params;
  }
  if (!same_params || !same_positions) {
    rope_positions_.assign(positions, positions + n_tokens);
    rope_cos_sin_.resize(static_cast<size_t>(n_tokens * half * 2));
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int i = 0; i < half; ++i) {
        // Angles in double: positions up to 128k times frequencies near 1 lose precision in
        // float before the sin/cos.
        const double angle = static_cast<double>(positions[t]) * rope_cache_[i];
        rope_cos_sin_[(t * half + i) * 2] = static_cast<float>(std::cos(angle));
        rope_cos_sin_[(t * half + i) * 2 + 1] = static_cast<float>(std::sin(angle));
      }
    }
  }
  ParallelFor(n_tokens, 1, 2, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        float* p = x + (t * n_heads + h) * params.head_dim;
        const float* cs = rope_cos_sin_.data() + t * half * 2;
        for (int i = 0; i < half; ++i) {
          const float c = cs[2 * i], s = cs[2 * i + 1];
          const float x0 = p[2 * i], x1 = p[2 * i + 1];
          p[2 * i] = x0 * c - x1 * s;
          p[2 * i + 1] = x0 * s + x1 * c;
        }
      }
    }
  });
  return absl::OkStatus();
}

namespace {

// silu(gate) * up elementwise (exp_poly.h: vectorized, the same bits on every clone). out may be
// gate.
__attribute__((target_clones("avx512f", "avx2", "default"))) void SwiGluSpan(
    const float* gate, const float* up, int64_t n, float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float silu = g / (1.0f + ExpPoly(-g));
    // Below -88, silu(g) = g e^g is under 1e-36 (and exp(88) would not scale g down to it).
    out[i] = (g < -88.0f ? 0.0f : silu) * up[i];
  }
}

}  // namespace

absl::Status CpuBackend::SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  // Vectorized, one decode token's few thousand elements take about a microsecond: less than
  // handing them to the pool. Batches use both cores (16 tokens of SmolLM2's 1536: 14-17 us per
  // layer on one).
  ParallelFor(n, 16, 8192, [&](int64_t begin, int64_t end) {
    SwiGluSpan(gate + begin, up + begin, end - begin, out + begin);
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::SwiGluMatMul(const Weight& w, float* gate, const float* up,
                                      int64_t n_tokens, float* y) {
  if (exact_matmul_) return Backend::SwiGluMatMul(w, gate, up, n_tokens, y);
  const int64_t cols = w.matrix().cols;
  auto swiglu_row = [&](int64_t t) {
    SwiGluSpan(gate + t * cols, up + t * cols, cols, gate + t * cols);
  };
  const PrepareRowFn prepare = swiglu_row;
  const MatMulProduct product{&w.matrix(), y};
  return MatMulQMany(&product, 1, gate, n_tokens, &pool_, &scratch_, MatMulOptions(), &prepare);
}

absl::Status CpuBackend::GatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                                    int64_t dim, float* dst) {
  for (int64_t i = 0; i < n_rows; ++i) {
    std::memcpy(dst + i * dim, src + int64_t{rows[i]} * dim, static_cast<size_t>(dim) * 4);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(float* x, const float* y, int64_t n) {
  AddSpan(x, y, n);
  return absl::OkStatus();
}

absl::Status CpuBackend::Attention(int layer, const float* q, const float* k, const float* v,
                                   int n_heads, const AttentionBatch& batch, float* out) {
  const KvLayout& L = kv_layout_;
  if (kv_ == nullptr) return absl::FailedPreconditionError("KV cache not allocated");
  if (layer < 0 || layer >= L.n_layers || n_heads % L.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: layer ", layer, " or heads ",
                                                   n_heads, " do not match the KV cache"));
  }
  const int64_t n_tokens = static_cast<int64_t>(batch.position.size());
  const int hd = L.head_dim;
  const int64_t kv_floats = int64_t{L.n_kv_heads} * hd;
  const int64_t n_slots = L.n_blocks * L.block_tokens;
  const bool f16 = L.type == KvType::kF16;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t slot = batch.slot_of_token[t];
    if (slot < 0 || slot >= n_slots) {
      return absl::InvalidArgumentError(absl::StrCat("KV slot ", slot, " out of range"));
    }
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < L.n_kv_heads; ++h) {
        const float* src = (kv == 0 ? k : v) + t * kv_floats + int64_t{h} * hd;
        uint8_t* dst = KvRow(layer, kv, slot, h);
        if (f16) {
          FloatsToFp16(src, hd, reinterpret_cast<uint16_t*>(dst));
        } else {
          std::memcpy(dst, src, hd * sizeof(float));
        }
      }
    }
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int32_t seq = batch.seq_of_token[t];
    if (seq < 0 || seq >= static_cast<int32_t>(batch.block_table.size()) ||
        batch.position[t] < 0 ||
        static_cast<int64_t>(batch.block_table[seq].size()) * L.block_tokens <=
            batch.position[t]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attention: token ", t, " at position ", batch.position[t],
          " is not covered by its sequence's block table"));
    }
  }
  const int group = n_heads / L.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // The work comes in units: a sub-item of a KV head (up to max_heads of its query heads, each
  // K and V row loaded once for all of them: SmolLM2's step spent ~40% less time in attention
  // with one call per KV head than with one per query head) over one chunk of its token's
  // context (ChunkPositions), ordered token by token, KV head by KV head, chunk by chunk (a KV
  // head's sub-items one after another over the same rows, while they are in L2). Each thread
  // takes a contiguous range of the step's units, cut where the work (positions attended, plus
  // a little per head and chunk) is nearest an equal share, so one sequence's decode step
  // splits its K/V rows between the threads: SmolLM2's (3 KV heads) on 2 threads had one thread
  // read two whole KV heads, the other the third and again the second. A thread merges the
  // chunks of the sub-items it holds both of; the few cut between two threads leave theirs in
  // straddle_parts, merged after the threads. The numbers depend only on the context, not on
  // the cut.
  const int max_heads =
      std::min(group, hd == 64 ? kMaxHeads64 : hd == 128 ? kMaxHeads128 : 1);
  const int subs = (group + max_heads - 1) / max_heads;  // sub-items per KV head
  auto sub_heads = [&](int s) { return std::min(max_heads, group - s * max_heads); };
  auto chunks_of = [&](int64_t t) { return Chunks(batch.position[t] + 1); };
  constexpr int kNextCallKRows = 256;
  constexpr int64_t kChunkWork = 8;  // a chunk's fixed cost per head, in positions
  std::vector<int64_t>& work_before = attention_work_before_;
  std::vector<int64_t>& unit_before = attention_unit_before_;
  work_before.resize(static_cast<size_t>(n_tokens) + 1);
  unit_before.resize(work_before.size());
  work_before[0] = unit_before[0] = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int nc = chunks_of(t);
    work_before[t + 1] = work_before[t] + n_heads * (batch.position[t] + 1 + kChunkWork * nc);
    unit_before[t + 1] = unit_before[t] + int64_t{L.n_kv_heads} * nc * subs;
  }
  const int64_t total_work = work_before[n_tokens], total_units = unit_before[n_tokens];
  struct Unit {
    int64_t t;
    int kvh, chunk, sub;
  };
  auto unit = [&](int64_t u) {
    const int64_t t =
        std::upper_bound(unit_before.begin(), unit_before.end(), u) - unit_before.begin() - 1;
    const int per_kv = chunks_of(t) * subs, r = static_cast<int>(u - unit_before[t]);
    return Unit{t, r / per_kv, r % per_kv / subs, r % subs};
  };
  // The unit boundary nearest to `target` work (monotone in it).
  auto unit_at = [&](int64_t target) -> int64_t {
    if (target >= total_work) return total_units;
    const int64_t t =
        std::upper_bound(work_before.begin(), work_before.end(), target) - work_before.begin() - 1;
    const int ctx = batch.position[t] + 1, nc = chunks_of(t), chunk = ChunkPositions(ctx);
    int64_t w = work_before[t], u = unit_before[t];
    for (int kvh = 0; kvh < L.n_kv_heads; ++kvh) {
      for (int c = 0; c < nc; ++c) {
        const int len = std::min(ctx, (c + 1) * chunk) - c * chunk;
        for (int s = 0; s < subs; ++s, ++u) {
          const int64_t uw = sub_heads(s) * (len + kChunkWork);
          if (target - w <= uw / 2) return u;
          w += uw;
        }
      }
    }
    return u;
  };
  const int n_threads = pool_.size();
  std::vector<int64_t>& cuts = attention_cuts_;
  std::vector<int64_t>& straddled = attention_straddled_;  // the cut sub-items' chunk-0 units
  cuts.assign(static_cast<size_t>(n_threads) + 1, total_units);
  cuts[0] = 0;
  straddled.clear();
  for (int k = 1; k < n_threads; ++k) {
    cuts[k] = unit_at(total_work * k / n_threads);
    if (cuts[k] == 0 || cuts[k] == total_units) continue;
    const Unit x = unit(cuts[k]);
    if (chunks_of(x.t) == 1) continue;
    const int64_t kv_first = unit_before[x.t] + int64_t{x.kvh} * kChunks * subs;
    for (int64_t u0 = kv_first; u0 < kv_first + subs; ++u0) {
      if (u0 < cuts[k] && cuts[k] <= u0 + subs &&
          std::find(straddled.begin(), straddled.end(), u0) == straddled.end()) {
        straddled.push_back(u0);
      }
    }
  }
  // Where a token's context is two chunks, head j of a sub-item leaves chunk c's part at
  // c * chunk_floats + j * part_floats of the sub-item's parts: head_dim sums, then the
  // maximum and the sum of the weights. A thread's own parts hold a KV head's sub-items (sub
  // s at s * max_heads * part_floats), a cut sub-item's its own.
  const int64_t part_floats = hd + 2;
  const int64_t own_floats = int64_t{kChunks} * subs * max_heads * part_floats;
  const int64_t cut_floats = int64_t{kChunks} * max_heads * part_floats;
  attention_parts_.resize(
      static_cast<size_t>(n_threads * own_floats + straddled.size() * cut_floats));
  float* const straddle_parts = attention_parts_.data() + n_threads * own_floats;
  // An f16 cache goes to the AVX-512 kernels that convert rows as they load them; elsewhere
  // (no AVX-512, or another head dim) each unit's rows are converted into a float scratch
  // first (exact), and the float kernels run on that.
  const bool fixed_kernel = hd == 64 || hd == 128;  // AttendHeads64/128, AttendHeadsF16Avx512
  const bool f16_native = f16 && fixed_kernel && GetCpuFeatures().avx512;
  // The attention of token t's heads h0 .. h0 + n - 1 from their parts at `parts`.
  auto merge = [&](const float* parts, int64_t chunk_floats, int64_t t, int h0, int n) {
    MergeChunks(parts, chunk_floats, n, hd, out + (t * n_heads + h0) * hd);
  };
  pool_.Run([&](int thread, int) {
    const int64_t begin = cuts[thread], end = cuts[thread + 1];
    if (begin >= end) return;
    std::vector<float> scores, k_rows, v_rows;
    float* const own_parts = attention_parts_.data() + thread * own_floats;
    std::vector<int32_t> identity;
    std::vector<const char*> next_runs;
    HeadAttention heads[kMaxHeads64];
    HeadAttentionF16 heads16[kMaxHeads64];
    Unit next = unit(begin);
    for (int64_t u = begin; u < end; ++u) {
      const Unit cur = next;
      const int64_t t = cur.t;
      const int c = cur.chunk, kvh = cur.kvh, nc = chunks_of(t);
      next = cur;
      if (++next.sub == subs) {
        next.sub = 0;
        if (++next.chunk == nc) {
          next.chunk = 0;
          if (++next.kvh == L.n_kv_heads) {
            next.kvh = 0;
            ++next.t;
          }
        }
      }
      const int h0 = kvh * group + cur.sub * max_heads, n = sub_heads(cur.sub);
      const std::vector<int32_t>& table = batch.block_table[batch.seq_of_token[t]];
      const int ctx = batch.position[t] + 1, chunk = ChunkPositions(ctx);
      const int first = c * chunk, last = std::min(ctx, first + chunk);
      // The sub-item's parts: the thread's own, or its slot where it is cut between threads.
      float* parts = own_parts + cur.sub * max_heads * part_floats;
      int64_t chunk_floats = subs * max_heads * part_floats;
      bool cut = false;
      if (nc > 1 && !straddled.empty()) {
        const auto s = std::find(straddled.begin(), straddled.end(), u - c * subs);
        if (s != straddled.end()) {
          parts = straddle_parts + (s - straddled.begin()) * cut_floats;
          chunk_floats = max_heads * part_floats;
          cut = true;
        }
      }
      // The next call's K rows, up to kNextCallKRows of them (every (sequence, KV head) is a
      // new stream, too short for the hardware prefetchers), are fetched into L2 while this
      // call runs: a run of bytes per cache block (a block's rows of one KV head are
      // consecutive), spread over the call by the fixed-head-dim kernels. All of them rather
      // than the first kGroupsAhead groups, and spread rather than at once: 16 sequences at
      // 160 positions (SmolLM2's shape) 101 -> 95 us per layer (attention_bench, medians of 6
      // alternating runs), 16 at 512 of Llama-1B's shape ~985 -> ~900; one sequence at 512 or
      // 2048 positions gained nothing from more. (None where the next call reads these rows
      // again, for another sub-item.)
      next_runs.clear();
      int run_bytes = 0;
      if (u + 1 < end && next.sub == 0) {
        const std::vector<int32_t>& table_next =
            batch.block_table[batch.seq_of_token[next.t]];
        const int next_ctx = batch.position[next.t] + 1;
        const int next_first = next.chunk * ChunkPositions(next_ctx);
        const int next_stop = std::min(
            {next_ctx, next_first + ChunkPositions(next_ctx), next_first + kNextCallKRows});
        run_bytes = L.block_tokens * hd * static_cast<int>(KvTypeBytes(L.type));
        for (int b = next_first / L.block_tokens; b * L.block_tokens < next_stop; ++b) {
          next_runs.push_back(reinterpret_cast<const char*>(
              KvRow(layer, 0, int64_t{table_next[b]} * L.block_tokens, next.kvh)));
        }
      }
      if (!fixed_kernel) {
        for (const char* run : next_runs) {
          for (int o = 0; o < run_bytes; o += 64) __builtin_prefetch(run + o, 0, 2);
        }
      }
      scores.resize(static_cast<size_t>(last - first) * n);
      for (int i = 0; i < n; ++i) {
        HeadAttention& a = heads[i];
        a.q = q + (t * n_heads + h0 + i) * hd;
        a.k_base = reinterpret_cast<const float*>(KvRow(layer, 0, 0, kvh));
        a.v_base = reinterpret_cast<const float*>(KvRow(layer, 1, 0, kvh));
        a.slot_stride = hd;
        a.table = table.data();
        a.block_tokens = L.block_tokens;
        a.first = first;
        a.end = last;
        a.head_dim = hd;
        a.scale = scale;
        a.scores = scores.data() + static_cast<size_t>(last - first) * i;
        if (nc == 1) {  // the attention itself
          a.out = out + (t * n_heads + h0 + i) * hd;
          a.stats = nullptr;
        } else {
          a.out = parts + c * chunk_floats + i * part_floats;
          a.stats = a.out + hd;
        }
      }
      if (fixed_kernel) {
        heads[0].prefetch_runs = next_runs.data();
        heads[0].n_prefetch_runs = static_cast<int>(next_runs.size());
        heads[0].prefetch_run_bytes = run_bytes;
      }
      if (f16_native) {
        for (int i = 0; i < n; ++i) {
          const HeadAttention& a = heads[i];
          heads16[i] = {a.q, reinterpret_cast<const uint16_t*>(KvRow(layer, 0, 0, kvh)),
                        reinterpret_cast<const uint16_t*>(KvRow(layer, 1, 0, kvh)),
                        a.slot_stride, a.table, a.block_tokens, a.first, a.end, a.head_dim,
                        a.scale, a.scores, a.out, a.stats, a.prefetch_runs,
                        a.n_prefetch_runs, a.prefetch_run_bytes};
        }
        AttendHeadsF16Avx512(heads16, n);
      } else {
        if (f16) {
          // Positions first .. last - 1 of this KV head as float rows at their positions,
          // read through an identity block table.
          k_rows.resize(static_cast<size_t>(last) * hd);
          v_rows.resize(k_rows.size());
          for (int p = first; p < last; ++p) {
            const int64_t slot =
                int64_t{table[p / L.block_tokens]} * L.block_tokens + p % L.block_tokens;
            const auto* k16 = reinterpret_cast<const uint16_t*>(KvRow(layer, 0, slot, kvh));
            const auto* v16 = reinterpret_cast<const uint16_t*>(KvRow(layer, 1, slot, kvh));
            Fp16ToFloats(k16, hd, k_rows.data() + int64_t{p} * hd);
            Fp16ToFloats(v16, hd, v_rows.data() + int64_t{p} * hd);
          }
          identity.resize(static_cast<size_t>(last / L.block_tokens + 1));
          for (size_t b = 0; b < identity.size(); ++b) identity[b] = static_cast<int32_t>(b);
          for (int i = 0; i < n; ++i) {
            heads[i].k_base = k_rows.data();
            heads[i].v_base = v_rows.data();
            heads[i].slot_stride = hd;
            heads[i].table = identity.data();
          }
        }
        if (hd == 64) {
          AttendHeads64(heads, n);
        } else if (hd == 128) {
          AttendHeads128(heads, n);
        } else {
          AttendHead(heads[0]);
        }
      }
      if (nc > 1 && c == nc - 1 && !cut) merge(parts, chunk_floats, t, h0, n);
    }
  });
  for (size_t i = 0; i < straddled.size(); ++i) {
    const Unit x = unit(straddled[i]);
    merge(straddle_parts + i * cut_floats, max_heads * part_floats, x.t,
          x.kvh * group + x.sub * max_heads, sub_heads(x.sub));
  }
  return absl::OkStatus();
}

}  // namespace tessera
