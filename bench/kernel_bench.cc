// Kernel micro-benchmark: the fused quantized matmul (kernels/cpu/matmul.h) against the
// machine's measured memory read bandwidth.
//
// A matrix-vector product at batch 1 reads every weight byte once and does little arithmetic
// per byte, so its ceiling is the read bandwidth; the figure of merit is weight GB/s and its
// ratio to the bandwidth measured here, with the same thread count. The weight set of each
// format is a rotation over several rows x cols matrices totalling more than --set_mib, far
// beyond the last-level cache, so every product streams from memory.
//
//   kernel_bench --threads=1,2 --formats=Q4_0,Q4_K,Q8_0 --rows=4096 --cols=14336 --batch=1,8
//
// Prefill-shaped A/B of the two batch paths (interleaved, best of N; robust to a busy machine):
//   kernel_bench --threads=2 --formats=Q4_0 --rows=2048 --cols=8192 --batch=8,16,64,256
//     (continued) --ab_reps=7 --min_seconds=0.3 --set_mib=64
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/read_bandwidth.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant/interleave.h"
#include "kernels/quant/types.h"

ABSL_FLAG(std::string, threads, "1,2", "comma-separated thread counts");
ABSL_FLAG(std::string, formats, "Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,F16,BF16",
          "comma-separated weight types");
ABSL_FLAG(int64_t, rows, 4096, "rows (output features) of each matrix");
ABSL_FLAG(int64_t, cols, 14336, "columns (input features) of each matrix");
ABSL_FLAG(std::string, batch, "1,8", "comma-separated activation batch sizes");
ABSL_FLAG(int64_t, set_mib, 512, "minimum size of each format's weight set (MiB)");
ABSL_FLAG(int64_t, bandwidth_mib, 1024, "buffer for the read-bandwidth measurement (MiB)");
ABSL_FLAG(double, min_seconds, 1.0, "minimum timed duration per table row");
ABSL_FLAG(int, ab_reps, 0,
          "if > 0: instead of the table, time the row-dot and the tiled (GEMM) path of each "
          "batch size alternately this many times (--min_seconds each) and print the best of each");
ABSL_FLAG(std::string, isa, "", "force scalar|avx2|avx512|avx512_vnni|amx (default: best)");
ABSL_FLAG(std::string, layout, "all",
          "gguf|interleaved|stripes|all, or a comma-separated list: the weight layouts timed "
          "for Q4_0/Q4_1 (Q8_0 and the k-quants Q4_K, Q5_K, Q6_K: gguf and stripes; "
          "kernels/quant/interleave.h; the "
          "CPU backend stores those striped where the ISA is avx512_vnni, Q4_0/Q4_1 "
          "interleaved where it "
          "is amx); rows of the interleaved layout are named Q4_0/il, of the striped one "
          "Q4_0/st (rows: a multiple of 16)");

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> ParseList(const std::string& flag, const char* name) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      absl::FPrintF(stderr, "--%s: '%s' is not a positive integer\n", name, std::string(part));
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

// A weight set: n_mats matrices of one format back to back, filled by repeating a few rows
// quantized with the reference quantizer (the kernels' speed does not depend on the values).
struct WeightSet {
  std::shared_ptr<HugePageMapping> bytes;  // 2 MiB pages, like the backend's weights
  std::vector<QuantMatrix> mats;
  int64_t matrix_bytes = 0;
};

WeightSet MakeWeightSet(const QuantTraits& traits, int64_t rows, int64_t cols, int64_t set_bytes,
                        WeightLayout layout, ThreadPool* pool) {
  WeightSet set;
  const int64_t row_bytes = *RowBytes(traits, cols);
  set.matrix_bytes = row_bytes * rows;
  const int64_t n_mats =
      std::max<int64_t>(2, (set_bytes + set.matrix_bytes - 1) / set.matrix_bytes);
  absl::StatusOr<std::shared_ptr<HugePageMapping>> mapping =
      HugePageMapping::Create(n_mats * set.matrix_bytes);
  if (!mapping.ok()) {
    std::fprintf(stderr, "kernel_bench: %s\n", std::string(mapping.status().message()).c_str());
    std::exit(1);
  }
  set.bytes = *std::move(mapping);
  constexpr int64_t kSeedRows = 16;
  std::vector<uint8_t> seed(static_cast<size_t>(kSeedRows * row_bytes));
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < kSeedRows; ++r) {
    for (float& v : row) v = normal(rng);
    traits.quantize_ref(row.data(), seed.data() + r * row_bytes, cols);
    if (layout == WeightLayout::kInterleaved8) {
      std::vector<uint8_t> gguf(seed.begin() + r * row_bytes, seed.begin() + (r + 1) * row_bytes);
      InterleaveRow(traits.type, gguf.data(), cols / traits.block_elems,
                    seed.data() + r * row_bytes);
    }
  }
  if (layout == WeightLayout::kStripes16) {  // the seed is one stripe; rows copy it bytewise
    const std::vector<uint8_t> gguf = seed;
    StripeRows(traits.type, gguf.data(), row_bytes, cols / traits.block_elems, seed.data());
  }
  const int64_t total_rows = n_mats * rows;
  pool->Run([&](int t, int nt) {  // each thread touches its own share first
    int64_t b, e;
    ThreadPool::Share(total_rows, t, nt, 64, &b, &e);
    for (int64_t r = b; r < e; ++r) {
      std::memcpy(set.bytes->data() + r * row_bytes, seed.data() + (r % kSeedRows) * row_bytes,
                  static_cast<size_t>(row_bytes));
    }
  });
  for (int64_t m = 0; m < n_mats; ++m) {
    set.mats.push_back(QuantMatrix{traits.type, rows, cols, row_bytes,
                                   set.bytes->data() + m * set.matrix_bytes, layout});
  }
  return set;
}

struct Timing {
  double seconds_per_product = 0;
  int64_t products = 0;
  double cpu_share = 0;  // process CPU time / (wall time * threads): < 1 when the machine is busy
};

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Runs products in rotation over the set: one untimed rotation, then whole rotations until
// min_seconds have passed. Returns the mean time per product.
Timing TimeProducts(const WeightSet& set, int64_t batch, ThreadPool* pool,
                    const MatMulOptions& options, double min_seconds) {
  const int64_t rows = set.mats[0].rows, cols = set.mats[0].cols;
  std::vector<float> x(static_cast<size_t>(batch * cols)), y(static_cast<size_t>(batch * rows));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  MatMulScratch scratch;
  auto rotation = [&] {
    for (const QuantMatrix& m : set.mats) {
      const absl::Status st = MatMulQ(m, x.data(), batch, y.data(), pool, &scratch, options);
      if (!st.ok()) {
        absl::FPrintF(stderr, "MatMulQ failed: %s\n", st.ToString());
        std::exit(1);
      }
    }
  };
  rotation();
  Timing t;
  const double cpu_start = ProcessCpuSeconds();
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    rotation();
    t.products += static_cast<int64_t>(set.mats.size());
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < min_seconds);
  t.seconds_per_product = elapsed / static_cast<double>(t.products);
  t.cpu_share = (ProcessCpuSeconds() - cpu_start) / (elapsed * pool->size());
  return t;
}

int Main() {
  const std::vector<int64_t> threads = ParseList(absl::GetFlag(FLAGS_threads), "threads");
  const std::vector<int64_t> batches = ParseList(absl::GetFlag(FLAGS_batch), "batch");
  const int64_t rows = absl::GetFlag(FLAGS_rows), cols = absl::GetFlag(FLAGS_cols);
  MatMulOptions options;
  if (const std::string isa = absl::GetFlag(FLAGS_isa); !isa.empty()) {
    bool found = false;
    for (CpuIsa c : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni,
                     CpuIsa::kAmx}) {
      if (CpuIsaName(c) == isa) {
        options.isa = c;
        found = true;
      }
    }
    if (!found) {
      absl::FPrintF(stderr, "--isa: unknown instruction set '%s'\n", isa);
      return 2;
    }
  }
  std::vector<const QuantTraits*> formats;
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_formats), ',', absl::SkipEmpty())) {
    const absl::StatusOr<GgmlType> type = ParseGgmlType(std::string(name));
    if (!type.ok()) {
      absl::FPrintF(stderr, "--formats: %s\n", type.status().ToString());
      return 2;
    }
    formats.push_back(FindQuantTraits(*type));
  }
  std::vector<WeightLayout> layouts;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_layout), ',')) {
    if (part == "gguf" || part == "all") layouts.push_back(WeightLayout::kGguf);
    if (part == "interleaved" || part == "all") layouts.push_back(WeightLayout::kInterleaved8);
    if (part == "stripes" || part == "all") layouts.push_back(WeightLayout::kStripes16);
    if (part != "gguf" && part != "interleaved" && part != "stripes" && part != "all") {
      absl::FPrintF(stderr, "--layout: '%s' is not gguf, interleaved, stripes or all\n", part);
      return 2;
    }
  }
  if (std::find(layouts.begin(), layouts.end(), WeightLayout::kStripes16) != layouts.end() &&
      rows % kStripeRows != 0) {
    absl::FPrintF(stderr, "--layout stripes: --rows %d is not a multiple of %d\n", rows,
                  kStripeRows);
    return 2;
  }

  absl::PrintF("kernel_bench: %d x %d matrices, ISA %s (CPU: %s)\n", rows, cols,
               std::string(CpuIsaName(options.isa)), CpuFeaturesString(GetCpuFeatures()));
  std::vector<double> bandwidth(threads.size());
  for (size_t i = 0; i < threads.size(); ++i) {
    ThreadPool pool(static_cast<int>(threads[i]));
    bandwidth[i] = MeasureReadBandwidth(&pool, absl::GetFlag(FLAGS_bandwidth_mib) << 20, 5);
    absl::PrintF("read bandwidth, %d thread(s): %.2f GB/s (best of 5 passes over %d MiB%s)\n",
                 threads[i], bandwidth[i] / 1e9, absl::GetFlag(FLAGS_bandwidth_mib),
                 TransparentHugePagesAvailable() ? ", 2 MiB pages" : "");
  }
  // cpu% is the share of `threads` cores the benchmark actually got: well below 100% means
  // other processes competed for the cores and the row is not a clean measurement.
  absl::PrintF("\n%-9s %7s %5s %12s %12s %9s %8s %6s\n", "format", "threads", "batch", "ms/product",
               "weight GB/s", "% of BW", "GFLOP/s", "cpu%");
  std::vector<std::pair<const QuantTraits*, WeightLayout>> runs;
  for (const QuantTraits* traits : formats) {
    if (!StripeSupported(traits->type)) {
      runs.emplace_back(traits, WeightLayout::kGguf);
      continue;
    }
    for (WeightLayout layout : layouts) {
      if (layout != WeightLayout::kInterleaved8 || InterleaveSupported(traits->type)) {
        runs.emplace_back(traits, layout);
      }
    }
  }
  for (const auto& [traits, layout] : runs) {
    const std::string name =
        absl::StrCat(traits->name, layout == WeightLayout::kInterleaved8 ? "/il"
                                   : layout == WeightLayout::kStripes16  ? "/st"
                                                                         : "");
    ThreadPool fill_pool(static_cast<int>(*std::max_element(threads.begin(), threads.end())));
    const WeightSet set = MakeWeightSet(*traits, rows, cols, absl::GetFlag(FLAGS_set_mib) << 20,
                                        layout, &fill_pool);
    for (size_t i = 0; i < threads.size(); ++i) {
      ThreadPool pool(static_cast<int>(threads[i]));
      if (const int reps = absl::GetFlag(FLAGS_ab_reps); reps > 0) {
        for (int64_t batch : batches) {
          MatMulOptions row_dot = options, tiled = options;
          row_dot.gemm_min_batch = row_dot.kquant_gemm_min_batch = batch + 1;
          tiled.gemm_min_batch = tiled.kquant_gemm_min_batch = 1;
          double best_row_dot = 1e30, best_tiled = 1e30;
          for (int rep = 0; rep < reps; ++rep) {
            const double min_s = absl::GetFlag(FLAGS_min_seconds);
            best_row_dot = std::min(
                best_row_dot, TimeProducts(set, batch, &pool, row_dot, min_s).seconds_per_product);
            best_tiled = std::min(
                best_tiled, TimeProducts(set, batch, &pool, tiled, min_s).seconds_per_product);
          }
          const double flop = 2.0 * static_cast<double>(rows * cols * batch);
          absl::PrintF(
              "%-9s threads %d batch %4d: row-dot %8.3f ms (%6.1f GFLOP/s), tiled %8.3f ms "
              "(%6.1f GFLOP/s): %.2fx (best of %d)\n",
              name, threads[i], batch, best_row_dot * 1e3, flop / best_row_dot / 1e9,
              best_tiled * 1e3, flop / best_tiled / 1e9, best_row_dot / best_tiled, reps);
          std::fflush(stdout);
        }
        continue;
      }
      for (int64_t batch : batches) {
        const Timing t = TimeProducts(set, batch, &pool, options, absl::GetFlag(FLAGS_min_seconds));
        const double gbps = static_cast<double>(set.matrix_bytes) / t.seconds_per_product / 1e9;
        const double gflops =
            2.0 * static_cast<double>(rows * cols * batch) / t.seconds_per_product / 1e9;
        absl::PrintF("%-9s %7d %5d %12.3f %12.2f %8.1f%% %8.1f %5.0f%%\n", name, threads[i],
                     batch, t.seconds_per_product * 1e3, gbps, 100.0 * gbps * 1e9 / bandwidth[i],
                     gflops, 100.0 * t.cpu_share);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return tessera::Main();
}
