// Decode-attention micro-benchmark: CpuBackend::Attention over a paged f16 (or f32) KV cache,
// one decode token per sequence at a given context length, every layer in turn, as in a decode
// step. Between steps it streams --evict_mib of other memory, standing in for the weights a
// real step reads, so the cache comes from where it would (mostly DRAM) rather than from a
// warm last-level cache. The figure is the cache bytes read per second beside the machine's
// measured read bandwidth (the same thread count), which bounds it.
//
//   attention_bench --shape=smollm2 --ctx=128,512,2048 --threads=2
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/read_bandwidth.h"
#include "kernels/cpu/thread_pool.h"

ABSL_FLAG(std::string, shape, "smollm2",
          "smollm2 (30 layers, 9 heads, 3 KV heads of 64), llama3-1b (16, 32, 8 of 64) or "
          "llama3-8b (32, 32, 8 of 128)");
ABSL_FLAG(std::string, ctx, "128,512,2048", "comma-separated context lengths");
ABSL_FLAG(int, threads, 2, "CPU threads");
ABSL_FLAG(int, batch, 1, "sequences, one decode token each");
ABSL_FLAG(std::string, kv_type, "f16", "f16 or f32");
ABSL_FLAG(int64_t, evict_mib, 96, "memory streamed between steps (MiB; 0: none)");
ABSL_FLAG(double, min_seconds, 1.0, "minimum timed duration per context length");
ABSL_FLAG(int, layers, 0,
          "layers (0: the shape's); fewer keep the cache in L1/L2 with --evict_mib 0, which times "
          "the arithmetic alone");

namespace tessera {
namespace {

struct Shape {
  int layers, heads, kv_heads, head_dim;
};

bool ShapeOf(const std::string& name, Shape* s) {
  if (name == "smollm2") *s = {30, 9, 3, 64};
  else if (name == "llama3-1b") *s = {16, 32, 8, 64};
  else if (name == "llama3-8b") *s = {32, 32, 8, 128};
  else return false;
  return true;
}

int Run() {
  Shape shape;
  if (!ShapeOf(absl::GetFlag(FLAGS_shape), &shape)) {
    std::fprintf(stderr, "unknown --shape %s\n", absl::GetFlag(FLAGS_shape).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_layers) < 0) {
    std::fprintf(stderr, "--layers must be 0 (the shape's) or more\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_layers) > 0) shape.layers = absl::GetFlag(FLAGS_layers);
  std::vector<int> ctxs;
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_ctx), ',')) {
    int c;
    if (!absl::SimpleAtoi(v, &c) || c < 1) {
      std::fprintf(stderr, "bad --ctx value '%s'\n", std::string(v).c_str());
      return 2;
    }
    ctxs.push_back(c);
  }
  const std::string type_name = absl::GetFlag(FLAGS_kv_type);
  if (type_name != "f16" && type_name != "f32") {
    std::fprintf(stderr, "--kv_type must be f16 or f32\n");
    return 2;
  }
  const int threads = absl::GetFlag(FLAGS_threads), batch = absl::GetFlag(FLAGS_batch);
  if (threads < 1 || batch < 1 || absl::GetFlag(FLAGS_evict_mib) < 0) {
    std::fprintf(stderr, "--threads and --batch must be >= 1, --evict_mib >= 0\n");
    return 2;
  }
  const int max_ctx = *std::max_element(ctxs.begin(), ctxs.end());
  KvLayout layout;
  layout.n_layers = shape.layers;
  layout.n_kv_heads = shape.kv_heads;
  layout.head_dim = shape.head_dim;
  layout.block_tokens = 16;
  const int blocks_per_seq = (max_ctx + layout.block_tokens - 1) / layout.block_tokens;
  layout.n_blocks = int64_t{blocks_per_seq} * batch;
  layout.type = type_name == "f16" ? KvType::kF16 : KvType::kF32;

  CpuBackend backend(threads);
  if (absl::Status st = backend.AllocateKvCache(layout); !st.ok()) {
    std::fprintf(stderr, "KV cache: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  ThreadPool pool(threads);
  const double bandwidth = MeasureReadBandwidth(&pool);

  // Each sequence's blocks interleaved with the others' (as a serving cache's would be).
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(batch));
  for (int b = 0; b < blocks_per_seq; ++b) {
    for (int s = 0; s < batch; ++s) tables[s].push_back(b * batch + s);
  }
  auto slot_of = [&](int s, int pos) {
    return int64_t{tables[s][pos / layout.block_tokens]} * layout.block_tokens +
           pos % layout.block_tokens;
  };
  const int64_t q_floats = int64_t{shape.heads} * shape.head_dim;
  const int64_t kv_floats = int64_t{shape.kv_heads} * shape.head_dim;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Fill positions 0 .. max_ctx - 1 of every sequence and layer, 64 positions per call.
  {
    constexpr int kFill = 64;
    std::vector<float> q(kFill * batch * q_floats), k(kFill * batch * kv_floats),
        v(k.size()), out(q.size());
    for (float& e : q) e = normal(rng);
    for (float& e : k) e = normal(rng);
    for (float& e : v) e = normal(rng);
    for (int p0 = 0; p0 < max_ctx; p0 += kFill) {
      AttentionBatch ab;
      ab.block_table = tables;
      for (int s = 0; s < batch; ++s) {
        for (int p = p0; p < std::min(max_ctx, p0 + kFill); ++p) {
          ab.seq_of_token.push_back(s);
          ab.position.push_back(p);
          ab.slot_of_token.push_back(slot_of(s, p));
        }
      }
      for (int l = 0; l < shape.layers; ++l) {
        absl::Status st = backend.Attention(l, q.data(), k.data(), v.data(), shape.heads, ab,
                                            out.data());
        if (!st.ok()) {
          std::fprintf(stderr, "fill: %s\n", std::string(st.message()).c_str());
          return 1;
        }
      }
    }
  }

  // In 2 MiB pages, like the weights (4 KiB pages would also flush the TLB, which a real step
  // does not).
  const int64_t evict_bytes = std::max<int64_t>(1, absl::GetFlag(FLAGS_evict_mib) << 20);
  absl::StatusOr<std::shared_ptr<HugePageMapping>> evict = HugePageMapping::Create(evict_bytes);
  if (!evict.ok()) {
    std::fprintf(stderr, "evict buffer: %s\n", std::string(evict.status().message()).c_str());
    return 1;
  }
  uint8_t* const evict_data = (*evict)->data();
  std::memset(evict_data, 1, static_cast<size_t>(evict_bytes));
  volatile uint8_t sink = 0;
  auto stream_evict = [&] {
    uint8_t acc = 0;
    if (absl::GetFlag(FLAGS_evict_mib) == 0) return;
    for (int64_t i = 0; i < evict_bytes; i += 64) acc ^= evict_data[i];
    sink = acc;
  };
  std::printf("shape %s (%d layers, %d heads, %d KV heads of %d), %s cache, batch %d, "
              "%d threads; read bandwidth %.1f GB/s (measured)\n",
              absl::GetFlag(FLAGS_shape).c_str(), shape.layers, shape.heads, shape.kv_heads,
              shape.head_dim, type_name.c_str(), batch, threads, bandwidth / 1e9);
  std::printf("%8s %12s %12s %10s %10s\n", "ctx", "us/step", "us/layer", "KV GB/s",
              "of bw");
  std::vector<float> q(batch * q_floats), k(batch * kv_floats), v(k.size()), out(q.size());
  for (float& e : q) e = normal(rng);
  for (int ctx : ctxs) {
    // The decode token at position ctx - 1 (its K/V rewrite that slot).
    AttentionBatch ab;
    ab.block_table = tables;
    for (int s = 0; s < batch; ++s) {
      ab.seq_of_token.push_back(s);
      ab.position.push_back(ctx - 1);
      ab.slot_of_token.push_back(slot_of(s, ctx - 1));
    }
    // A one-position call first, untimed: a real step's attention follows the step's other
    // kernels on a pool that is awake, not one that went to sleep during the eviction.
    AttentionBatch warm = ab;
    for (int s = 0; s < batch; ++s) {
      warm.position[s] = 0;
      warm.slot_of_token[s] = slot_of(s, 0);
    }
    std::vector<double> step_seconds;
    double seconds = 0.0;
    while (seconds < absl::GetFlag(FLAGS_min_seconds) || step_seconds.size() < 5) {
      stream_evict();
      absl::Status st =
          backend.Attention(0, q.data(), k.data(), v.data(), shape.heads, warm, out.data());
      const auto t0 = std::chrono::steady_clock::now();
      for (int l = 0; l < shape.layers && st.ok(); ++l) {
        st = backend.Attention(l, q.data(), k.data(), v.data(), shape.heads, ab, out.data());
      }
      step_seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      if (!st.ok()) {
        std::fprintf(stderr, "attention: %s\n", std::string(st.message()).c_str());
        return 1;
      }
      seconds += step_seconds.back();
    }
    // The median step (the machine's noise comes in bursts).
    std::sort(step_seconds.begin(), step_seconds.end());
    const double step_s = step_seconds[step_seconds.size() / 2];
    const double kv_bytes =
        2.0 * shape.layers * batch * ctx * kv_floats * KvTypeBytes(layout.type);
    std::printf("%8d %12.1f %12.2f %10.2f %9.0f%%\n", ctx, step_s * 1e6,
                step_s * 1e6 / shape.layers, kv_bytes / step_s / 1e9,
                100.0 * kv_bytes / step_s / bandwidth);
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return tessera::Run();
}
