// Fused quantized matrix products on the CPU.
//
//   y (n_batch, w.rows) = x (n_batch, w.cols) * W^T      (W stored quantized, never dequantized)
//
// The activations are first quantized to 8-bit blocks (kernels/cpu/act_quant.h: per-32 blocks
// for Q4_0..Q8_0, per-256 super-blocks with per-16 sums for the k-quants; a batch's rows by the
// threads of the product, each its share), then every weight row is dotted with every
// activation row using integer SIMD on the stored blocks. Threads take
// contiguous chunks of weight rows from a shared counter and use each row (a small tile of
// rows, cached) for the whole batch, so a small-batch product costs one pass over the weights:
// it is memory-bound, and its speed is reported as weight GB/s (bench/kernel_bench.cc).
//
// The instruction set is chosen at run time from the CPU's features (scalar, AVX2, AVX-512,
// AVX-512 VNNI); tests may force a specific one.
//
// Batch invariance: every output element is summed in one canonical order (dot_kernels.h),
// whatever the batch size, the row's position in it, the path (row-dot or tiled), the thread
// count or the instruction set, so y's row b is the same bits as x's row b multiplied alone.
#ifndef TESSERA_KERNELS_CPU_MATMUL_H_
#define TESSERA_KERNELS_CPU_MATMUL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/tensor.h"

namespace tessera {

// In increasing order of capability; kAmx is AVX-512 VNNI plus the AMX-INT8 tiles (used by the
// tiled GEMM; the row-dot kernels are VNNI's).
enum class CpuIsa { kScalar, kAvx2, kAvx512, kAvx512Vnni, kAmx };

std::string_view CpuIsaName(CpuIsa isa);

// The best instruction set this CPU (and this build) supports.
CpuIsa DetectCpuIsa();

// Whether `isa` can run here (compiled in and supported by the CPU).
bool CpuIsaAvailable(CpuIsa isa);

// Whether MatMulQ implements weights of this type (every quantized format of the registry and
// F32/F16/BF16).
bool MatMulSupports(GgmlType type);

// The most products one MatMulQMany call takes.
inline constexpr int kMaxMatMulProducts = 8;

// One thread's claim cursors over the rows of a call's products (matmul.cc's RowRanges), on
// cache lines of their own: a thread claims its chunks on its own lines, which another thread
// touches only to initialize them and, at the end, to take what is left. A batch's activation
// rows are shared out the same way (act_cursor), and act_done counts those this thread has
// quantized.
struct alignas(64) RowCursorLine {
  std::atomic<uint64_t> cursor[kMaxMatMulProducts];
  std::atomic<uint64_t> act_cursor;
  std::atomic<int64_t> act_done;
};

// Reusable buffers for the quantized activations (n_batch rows, 64-byte aligned inside the
// vector) and the row cursors; keep one per engine to avoid allocation on every call. Not
// thread-safe: one MatMulQ at a time per scratch.
struct MatMulScratch {
  std::vector<uint8_t> activations;
  std::unique_ptr<RowCursorLine[]> cursor_lines;
  int n_cursor_lines = 0;
};

// Batches of at least this many activation rows use the register-tiled kernels
// (kernels/cpu/gemm_kernels.h) where the ISA and weight type have them; smaller ones the
// row-dot kernels. Zen 4, 2 threads, 2048 x 8192 (kernel_bench --ab_reps): the tiled path
// is 0.8x the row-dot one at batch 8, ~1.05-1.3x at 12, 1.3-1.45x at 14, 2.3-3.2x at 64-256.
// With AMX (2-core Xeon VM, 2026-11-23, 8192 x 2048 Q4_0 / Q4_1): 0.42-0.45x at 4,
// 0.81-0.87x at 8, 1.16-1.24x at 12.
inline constexpr int64_t kDefaultGemmMinBatch = 12;

// The same for the k-quants' tiled kernels, whose weight decoding costs more per row; it
// depends on the instruction set. 2-core Xeon VM, 2 threads, 8192 x 2048 (kernel_bench
// --ab_reps, 2026-11-23 evening, SIMD row decoders for every k-quant), tiled / row-dot speed:
// AVX-512 VNNI (AMX machine) at 12 / 16 / 32 rows: Q2_K 1.08x / 1.40x / 1.92x, Q3_K 0.86x /
// 1.13x / 1.96x, Q4_K 1.04x / 1.46x / 1.98x, Q5_K 1.08x / 1.47x / 2.03x, Q6_K 0.78x / 1.02x /
// 1.78x. AVX2 (--isa avx2) at 16 / 20 / 24: Q3_K 1.53x / 0.94x / 1.10x, Q4_K 1.30x / 0.87x /
// 1.01x, Q6_K 1.31x / 0.85x / 1.02x: a second 16-row panel costs as much as a full one there.
inline constexpr int64_t kDefaultKQuantGemmMinBatch = 16;      // AVX-512 VNNI, AMX
inline constexpr int64_t kDefaultKQuantGemmMinBatchAvx2 = 24;  // AVX2, AVX-512 without VNNI

struct MatMulOptions {
  CpuIsa isa;  // defaults to DetectCpuIsa()
  int64_t gemm_min_batch = kDefaultGemmMinBatch;  // tests and benchmarks may move the switch
  int64_t kquant_gemm_min_batch = 0;  // 0: the default above for `isa`
  MatMulOptions();
};

// x: (n_batch, w.cols) floats, finite. y: (n_batch, w.rows). pool may be null (one thread).
// Errors: unsupported type (Unimplemented), instruction set not available (FailedPrecondition),
// cols not a whole number of blocks or row_bytes too small (InvalidArgument).
absl::Status MatMulQ(const QuantMatrix& w, const float* x, int64_t n_batch, float* y,
                     ThreadPool* pool, MatMulScratch* scratch,
                     const MatMulOptions& options = MatMulOptions());

// One product of MatMulQMany: y (n_batch, w->rows) = x W^T.
struct MatMulProduct {
  const QuantMatrix* w;
  float* y;
};

// Writes row `row` of a product's input x: the elementwise op that makes the input (the
// layer's RMSNorm, the FFN's SwiGLU) fused into the product (MatMulQMany's `prepare`).
using PrepareRowFn = absl::FunctionRef<void(int64_t row)>;

// Several products of the same x (n_batch, cols), e.g. a layer's Q, K and V projections: the
// same results, bit for bit, as MatMulQ on each, but x is quantized once per activation format
// and all weight rows are shared out in one pass of the pool (one fork-join instead of one per
// product). Every w must have `cols` columns; errors as MatMulQ's, naming the product.
// With `prepare`, row b of x is first written by prepare(b), once per row, on whichever of the
// product's threads quantizes it (each its share inside the fork-join where the threads
// quantize, the pool's threads before it otherwise): the op before the product costs no pass
// and no fork-join of its own, and the row is quantized while it is in the core's cache. The
// results are those of calling prepare on every row and then MatMulQMany without it.
absl::Status MatMulQMany(const MatMulProduct* products, int n_products, const float* x,
                         int64_t n_batch, ThreadPool* pool, MatMulScratch* scratch,
                         const MatMulOptions& options = MatMulOptions(),
                         const PrepareRowFn* prepare = nullptr);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_MATMUL_H_
