// cuda_kernel_bench: the CUDA backend's ops one at a time, beside the device's measured copy
// bandwidth: quantized MatMul of the Llama 3 8B matrix shapes at 1..64 tokens on the fused
// matvec and on the fp16 GEMM path (weight bytes read per second by the faster, and the share of
// the copy bandwidth; "-" where a path does not apply), paged attention at decode and prefill
// shapes, and the cost of one kernel launch through the backend. Where `tessera bench
// --backend cuda` gives a whole step's time, this says which op it goes to.
//
//   cuda_kernel_bench [--quant Q4_0,Q4_K,Q8_0] [--tokens 1,2,4,8,16,32,64] [--reps N]
//
// Times are per op: N back-to-back calls between two synchronisations, over N, so an op
// shorter than its launch shows the launch cost (as it would inside a decode step).
// Without CUDA (or a GPU) it says so and exits 0.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/quant/types.h"
#include "model/weights.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/launch.h"
#endif

ABSL_FLAG(std::string, quant, "Q4_0,Q4_K,Q8_0", "weight formats");
ABSL_FLAG(std::string, tokens, "1,2,4,8,16,32,64", "tokens per MatMul");
ABSL_FLAG(int, reps, 50, "calls per timing");

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Seconds per call of `op`, `reps` calls between synchronisations, best of three rounds.
template <class Op>
double TimeOp(CudaBackend* b, int reps, Op op) {
  double best = 1e30;
  for (int round = 0; round < 4; ++round) {  // round 0 warms up
    if (!b->Synchronize().ok()) return -1;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) {
      if (!op().ok()) return -1;
    }
    if (!b->Synchronize().ok()) return -1;
    if (round > 0) best = std::min(best, Seconds(start) / reps);
  }
  return best;
}

int Run(const std::vector<GgmlType>& types, const std::vector<int64_t>& token_counts, int reps) {
  auto created = CudaBackend::Create(0);
  if (!created.ok()) {
    std::printf("cuda_kernel_bench: %s\n", std::string(created.status().message()).c_str());
    return 0;
  }
  CudaBackend* b = created->get();
  const double bw = *b->MeasureCopyBandwidth();
  std::printf("backend          %s\n", b->name().c_str());
  std::printf("copy bandwidth   %.1f GB/s (device-to-device cudaMemcpy of 1 GiB, read + write)\n\n",
              bw / 1e9);

  // Launch cost: a 4096-float Add, far shorter than its launch.
  auto xbuf = *b->Allocate(1 << 20);
  auto ybuf = *b->Allocate(1 << 20);
  const double launch_s =
      TimeOp(b, 2000, [&] { return b->Add(xbuf->data(), ybuf->data(), 4096); });
  std::printf("one op (Add of 4096 floats), back to back: %.2f us per call\n\n", launch_s * 1e6);

  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"wq/wo 4096x4096", 4096, 4096},
                          {"wk/wv 1024x4096", 1024, 4096},
                          {"gate/up 14336x4096", 14336, 4096},
                          {"down 4096x14336", 4096, 14336},
                          {"output 128256x4096", 128256, 4096}};
  std::printf("%-6s %-20s %6s %12s %12s %8s %12s\n", "quant", "matrix", "tokens", "fused us/op",
              "weight GB/s", "% copy", "gemm us/op");
  for (GgmlType type : types) {
    for (const Shape& s : shapes) {
      const int64_t row_bytes = *RowBytes(*FindQuantTraits(type), s.cols);
      std::vector<uint8_t> blocks(static_cast<size_t>(s.rows * row_bytes));
      FillSyntheticRows(type, s.rows, s.cols, 5, blocks.data());
      QuantMatrix host;
      host.type = type;
      host.rows = s.rows;
      host.cols = s.cols;
      host.row_bytes = row_bytes;
      host.data = blocks.data();
      auto w = b->LoadWeight(host);
      if (!w.ok()) {
        std::printf("%s: %s\n", s.name, std::string(w.status().message()).c_str());
        return 1;
      }
      const int64_t max_t = *std::max_element(token_counts.begin(), token_counts.end());
      auto x = *b->Allocate(max_t * s.cols);
      auto y = *b->Allocate(max_t * s.rows);
      std::vector<float> hx(static_cast<size_t>(max_t * s.cols));
      std::mt19937 rng(9);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : hx) v = normal(rng);
      (void)b->CopyToDevice(hx.data(), max_t * s.cols, x->data());
      const double bytes = static_cast<double>(row_bytes) * s.rows;
      auto matmul = [&](int64_t t) { return b->MatMul(**w, x->data(), t, y->data()); };
      for (int64_t t : token_counts) {
        // Each path where it applies: fused up to kMaxFusedTokens, the fp16 GEMM from 2.
        double fused = -1, gemm = -1;
        if (t <= cuda::kMaxFusedTokens) {
          b->set_max_fused_tokens(cuda::kMaxFusedTokens);
          fused = TimeOp(b, reps, [&] { return matmul(t); });
        }
        if (t >= 2) {
          b->set_max_fused_tokens(1);
          gemm = TimeOp(b, reps, [&] { return matmul(t); });
        }
        b->set_max_fused_tokens(cuda::kDefaultMaxFusedTokens);
        const double best = fused > 0 && (gemm < 0 || fused < gemm) ? fused : gemm;
        auto us = [](double sec) {  // "-" where the path does not apply
          char buf[32];
          if (sec < 0) return std::string("-");
          std::snprintf(buf, sizeof buf, "%.1f", sec * 1e6);
          return std::string(buf);
        };
        std::printf("%-6s %-20s %6lld %12s %12.1f %7.0f%% %12s\n", GgmlTypeName(type).c_str(),
                    s.name, static_cast<long long>(t), us(fused).c_str(), bytes / best / 1e9,
                    100.0 * bytes / best / bw, us(gemm).c_str());
        std::fflush(stdout);
      }
    }
  }

  // Attention at Llama 3 8B shapes (32 query heads, 8 KV heads, head_dim 128): decode of B
  // sequences at context 512, and a 512-token prefill.
  std::printf("\n%-34s %12s %14s\n", "attention (8B heads)", "us/op", "KV GB/s");
  const int n_heads = 32, n_kv = 8, hd = 128, ctx = 512;
  for (const auto& [batch, prefill] : std::vector<std::pair<int, bool>>{
           {1, false}, {8, false}, {32, false}, {64, false}, {1, true}}) {
    KvLayout L;
    L.n_layers = 1;
    L.n_kv_heads = n_kv;
    L.head_dim = hd;
    L.block_tokens = 16;
    L.n_blocks = int64_t{batch} * (ctx / 16 + 1);
    if (!b->AllocateKvCache(L).ok()) return 1;
    AttentionBatch ab;
    for (int s = 0; s < batch; ++s) {
      std::vector<int32_t> table;
      for (int i = 0; i < ctx / 16 + 1; ++i) table.push_back(s * (ctx / 16 + 1) + i);
      ab.block_table.push_back(table);
      const int first = prefill ? 0 : ctx - 1;
      for (int p = first; p < ctx; ++p) {
        ab.seq_of_token.push_back(s);
        ab.position.push_back(p);
        ab.slot_of_token.push_back(int64_t{table[p / 16]} * 16 + p % 16);
      }
    }
    const int64_t T = static_cast<int64_t>(ab.position.size());
    auto q = *b->Allocate(T * n_heads * hd);
    auto kv = *b->Allocate(T * n_kv * hd);
    auto out = *b->Allocate(T * n_heads * hd);
    const double sec = TimeOp(b, reps, [&] {
      return b->Attention(0, q->data(), kv->data(), kv->data(), n_heads, ab, out->data());
    });
    const double kv_bytes = 2.0 * batch * ctx * n_kv * hd * 4;
    char label[64];
    std::snprintf(label, sizeof label, "%s, batch %d, context %d", prefill ? "prefill" : "decode",
                  batch, ctx);
    std::printf("%-34s %12.1f %14.1f\n", label, sec * 1e6, kv_bytes / sec / 1e9);
  }
  return 0;
}

#endif  // TESSERA_HAVE_CUDA

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
#if TESSERA_HAVE_CUDA
  std::vector<tessera::GgmlType> types;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_quant), ',')) {
    const absl::StatusOr<tessera::GgmlType> t = tessera::ParseGgmlType(std::string(name));
    if (!t.ok()) {
      std::fprintf(stderr, "cuda_kernel_bench: --quant: %s\n",
                   std::string(t.status().message()).c_str());
      return 2;
    }
    types.push_back(*t);
  }
  std::vector<int64_t> tokens;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t t = 0;
    if (!absl::SimpleAtoi(part, &t) || t < 1) {
      std::fprintf(stderr, "cuda_kernel_bench: bad --tokens '%s'\n", std::string(part).c_str());
      return 2;
    }
    tokens.push_back(t);
  }
  return tessera::Run(types, tokens, absl::GetFlag(FLAGS_reps));
#else
  std::printf("cuda_kernel_bench: this build has no CUDA backend (nvcc was not found)\n");
  return 0;
#endif
}
