// MatMulQ: validation, activation quantization, and the split of weight rows across threads.
// The arithmetic lives in the per-ISA kernel files (dot_kernels.h).
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/quant/interleave.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

// Weight bytes a thread works on before moving to the next group of activation rows: small
// enough to stay in L1/L2 while every activation row passes over it, so a batch reads each
// weight byte from memory once.
constexpr int64_t kTileWeightBytes = 16 * 1024;

// Weight bytes per claim of RowRanges at most for batches of 2 and more (an eighth of a
// thread's share of a product otherwise): a thread that runs out of work waits for the
// others' current chunks, and with 16 sequences a chunk of SmolLM2's output matrix (3072
// rows, 1.8 MiB) kept it waiting about a millisecond, long enough for it to go to sleep
// (ThreadPool); 6 of 14 such runs had then sent jobs to the caller alone, none of 8 after.
// One sequence gets through such a chunk in ~0.1 ms.
constexpr int64_t kMaxChunkBytes = 512 * 1024;

// Batches up to which striped Q6_K weights run the striped kernel (above: see MatMulQMany).
// Single-thread kernel_bench, 2048 x 2048, Zen 4: the striped kernel runs ~205 GFLOP/s at any
// batch (the tiled one on GGUF rows 212 at 16 sequences, 240-260 at 32, 267-293 at 128), the
// tiled one on rows converted from stripes 195 at 32 and 246-251 at 128. (Striped Q4_K and
// Q5_K keep their kernels: 250-315 GFLOP/s at every batch, as fast as the tiled one.)
constexpr int64_t kStripeKMaxBatch = 48;

// Batches from which the threads quantize the activation rows themselves, inside the product's
// fork-join, rather than the caller alone before it. SmolLM2 at 16 sequences: the caller spent
// 9-16 us of each product's ~90 us reading the rows the other core had written and quantizing
// them (bench/RESULTS.md, 2026-12-07, fifth session).
constexpr int64_t kParallelQuantizeMinBatch = 4;

// Kernel for `type` on `isa`, falling back to the next lower instruction set.
RowDotFn FindRowDot(GgmlType type, CpuIsa isa) {
  RowDotFn fn = nullptr;
  if (isa == CpuIsa::kAvx512Vnni || isa == CpuIsa::kAmx) fn = Avx512VnniRowDot(type);
  // AVX-512 without VNNI has no kernels of its own: for these memory-bound loops its wider
  // registers buy little over AVX2 (and Zen 4 splits them anyway), so it runs the AVX2 ones.
  if (fn == nullptr && isa != CpuIsa::kScalar) fn = Avx2RowDot(type);
  if (fn == nullptr) fn = ScalarRowDot(type);
  return fn;
}

// Tiled kernel for `type` on `isa`, or nullptr (scalar, or a type without one).
GemmRowsFn FindGemmRows(GgmlType type, CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAmx:
      if (GemmRowsFn fn = AmxGemmRows(type); fn != nullptr) return fn;
      [[fallthrough]];
    case CpuIsa::kAvx512Vnni:
      if (GemmRowsFn fn = Avx512VnniGemmRows(type); fn != nullptr) return fn;
      return Avx512VnniKGemmRows(type);
    case CpuIsa::kAvx512:
    case CpuIsa::kAvx2:
      if (GemmRowsFn fn = Avx2GemmRows(type); fn != nullptr) return fn;
      return Avx2KGemmRows(type);
    case CpuIsa::kScalar:
      return nullptr;
  }
  return nullptr;
}

void QuantizeActivations(ActFormat format, bool avx2, const float* x, int64_t n_batch, int64_t cols,
                         uint8_t* out) {
  const int64_t row_bytes = ActRowBytes(format, cols);
  for (int64_t b = 0; b < n_batch; ++b) {
    const float* xb = x + b * cols;
    uint8_t* ob = out + b * row_bytes;
    if (format == ActFormat::kBlock32) {
      avx2 ? QuantizeActRow32Avx2(xb, cols, ob) : QuantizeActRow32Scalar(xb, cols, ob);
    } else {
      auto* blocks = reinterpret_cast<ActBlock256*>(ob);
      avx2 ? QuantizeActBlock256Avx2(xb, cols, blocks)
           : QuantizeActBlock256Scalar(xb, cols, blocks);
    }
  }
}

}  // namespace

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx512Vnni:
      return "avx512_vnni";
    case CpuIsa::kAmx:
      return "amx";
  }
  return "unknown";
}

CpuIsa DetectCpuIsa() {
  const CpuFeatures& f = GetCpuFeatures();
  if (f.amx_int8) return CpuIsa::kAmx;
  if (f.avx512_vnni) return CpuIsa::kAvx512Vnni;
  if (f.avx512) return CpuIsa::kAvx512;
  if (f.avx2) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

bool CpuIsaAvailable(CpuIsa isa) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case CpuIsa::kScalar:
      return true;
    case CpuIsa::kAvx2:
      return f.avx2;
    case CpuIsa::kAvx512:
      return f.avx512;
    case CpuIsa::kAvx512Vnni:
      return f.avx512_vnni;
    case CpuIsa::kAmx:
      return f.amx_int8;
  }
  return false;
}

bool MatMulSupports(GgmlType type) {
  return FindQuantTraits(type) != nullptr && ScalarRowDot(type) != nullptr;
}

MatMulOptions::MatMulOptions() : isa(DetectCpuIsa()) {}

namespace {

// Checks one product's weight against the call; the messages name what is wrong.
absl::Status CheckWeight(const QuantMatrix& w, int64_t n_batch) {
  const QuantTraits* traits = FindQuantTraits(w.type);
  if (traits == nullptr || !MatMulSupports(w.type)) {
    return absl::UnimplementedError(absl::StrCat("MatMulQ: weight type ", GgmlTypeName(w.type),
                                                 " (id ", static_cast<uint32_t>(w.type),
                                                 ") has no CPU kernel"));
  }
  // Rows below 2^31: RowRanges packs two row indices into one 64-bit atomic.
  if (w.rows < 0 || w.rows > INT32_MAX || w.cols <= 0 || n_batch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulQ: bad shape: ", w.rows, " rows x ", w.cols, " cols, batch ", n_batch));
  }
  const absl::StatusOr<int64_t> row_bytes = RowBytes(*traits, w.cols);
  if (!row_bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ: ", row_bytes.status().message()));
  }
  if (w.layout == WeightLayout::kInterleaved8 && !InterleaveSupported(w.type)) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ: ", traits->name,
                                                   " weights have no interleaved layout"));
  }
  if (w.layout == WeightLayout::kStripes16 && !StripeSupported(w.type)) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ: ", traits->name,
                                                   " weights have no striped layout"));
  }
  if (w.layout == WeightLayout::kStripes16 && w.rows % kStripeRows != 0) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ: a striped ", traits->name,
                                                   " matrix has whole stripes of ", kStripeRows,
                                                   " rows, not ", w.rows));
  }
  if (w.row_bytes < *row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulQ: row stride ", w.row_bytes, " bytes is less than the ", *row_bytes,
                     " bytes of one ", traits->name, " row of ", w.cols, " elements"));
  }
  return absl::OkStatus();
}

// One product as the workers see it.
struct ProductPlan {
  const QuantMatrix* w;
  float* y;
  RowDotFn dot;
  GemmRowsFn gemm;    // nullptr: the row-dot path (or the striped one)
  StripeRowsFn stripes;  // w is striped and this ISA reads it: every batch size
  // The kernels read GGUF rows but w is interleaved or striped (below AVX-512 VNNI): they run
  // on GGUF copies of each tile of rows.
  bool to_gguf;
  bool vnni;  // the ISA is AVX-512 VNNI or AMX: UnstripeRowsAvx512 may run
  int64_t gguf_row_bytes;
  const uint8_t* act;  // x in the product's activation format
  int64_t act_stride;
  const uint8_t* panels;  // the tiled path's packed activations
  int64_t n_blocks;
  int64_t tile_rows;   // rows per cached tile of the row-dot path
  int64_t chunk_rows;  // rows per claim (RowRanges)
};

// Packs a claim cursor's front and back row.
uint64_t PackCursor(int64_t front, int64_t back) {
  return static_cast<uint64_t>(front) << 32 | static_cast<uint64_t>(back);
}

// The next chunk of at most n rows from the front or the back of a cursor's rows; a back chunk
// starts on the multiple of `granule` at or after back - n. False when none are left.
bool ClaimRows(std::atomic<uint64_t>& cursor, int64_t n, int64_t granule, bool front,
               int64_t* begin, int64_t* end) {
  uint64_t now = cursor.load(std::memory_order_relaxed);
  for (;;) {
    const auto f = static_cast<int64_t>(now >> 32);
    const auto b = static_cast<int64_t>(now & 0xFFFFFFFFu);
    if (f >= b) return false;
    const int64_t nf = front ? std::min(b, f + n) : f;
    const int64_t nb = front ? b : std::max(f, (b - n + granule - 1) / granule * granule);
    if (cursor.compare_exchange_weak(now, PackCursor(nf, nb), std::memory_order_relaxed)) {
      *begin = front ? f : nb;
      *end = front ? nf : b;
      return true;
    }
  }
}

// How the rows of a call's products are shared out. Each product's rows are cut into one
// contiguous range per thread (edges on multiples of 16 rows: outputs of different threads meet
// only at 64-byte lines of y). A thread claims chunk_rows at a time from the front of its own
// ranges, so that it reads one long sequential stream per product, which the hardware and the
// kernels' software prefetchers follow (chunks handed out in turn from one counter cut
// SmolLM2's streams into 17 KiB pieces and its decode ran 5-10% slower); once its own ranges
// are done it claims chunks from the backs of the others', so that a thread slowed down by
// other work on its core does not hold everyone up at the join. Which thread computes a row
// does not change its bits. Each thread's cursors share a cache line of their own
// (RowCursorLine): with all of them on one line, every claim moved that line between the
// cores.
class RowRanges {
 public:
  // lines: n_threads of them. act_rows: the activation rows the threads quantize (0: none).
  RowRanges(const ProductPlan* plans, int n_products, int n_threads, int64_t act_rows,
            RowCursorLine* lines)
      : plans_(plans), n_threads_(n_threads), lines_(lines) {
    for (int t = 0; t < n_threads; ++t) {
      for (int i = 0; i < n_products; ++i) {
        const int64_t rows = plans[i].w->rows;
        lines_[t].cursor[i].store(PackCursor(Edge(rows, t, 16), Edge(rows, t + 1, 16)),
                                  std::memory_order_relaxed);
      }
      lines_[t].act_cursor.store(PackCursor(Edge(act_rows, t, 1), Edge(act_rows, t + 1, 1)),
                                 std::memory_order_relaxed);
      lines_[t].act_done.store(0, std::memory_order_relaxed);
    }
  }
  // [*begin, *end): the next chunk from the front (ClaimFront) or the back (ClaimBack) of
  // thread t's range of product i; false when nothing is left of it. Front chunks start on
  // multiples of 16 (so does every range), and so do back chunks (b may be the matrix's last
  // row + 1).
  bool ClaimFront(int i, int t, int64_t* begin, int64_t* end) {
    return ClaimRows(lines_[t].cursor[i], plans_[i].chunk_rows, 16, /*front=*/true, begin, end);
  }
  bool ClaimBack(int i, int t, int64_t* begin, int64_t* end) {
    return ClaimRows(lines_[t].cursor[i], plans_[i].chunk_rows, 16, /*front=*/false, begin,
                     end);
  }
  // The same over thread t's activation rows, one at a time.
  bool ClaimActivation(int t, bool front, int64_t* row) {
    int64_t end;
    return ClaimRows(lines_[t].act_cursor, 1, 1, front, row, &end);
  }
  // Counts activation rows that thread t has quantized (release: their bytes are written).
  void ActivationsDone(int t, int64_t rows) {
    lines_[t].act_done.fetch_add(rows, std::memory_order_release);
  }
  // Activation rows quantized so far, by all threads.
  int64_t ActivationsDoneByAll() const {
    int64_t done = 0;
    for (int t = 0; t < n_threads_; ++t) {
      done += lines_[t].act_done.load(std::memory_order_acquire);
    }
    return done;
  }

 private:
  int64_t Edge(int64_t rows, int t, int64_t granule) const {
    return std::min(rows, (rows * t / n_threads_ + granule - 1) / granule * granule);
  }

  const ProductPlan* plans_;
  int n_threads_;
  RowCursorLine* lines_;
};

constexpr ActFormat kQuantizedFormats[] = {ActFormat::kBlock32, ActFormat::kBlock256};

// Rows [begin, end) of one product, read from w (stride w_stride); y points at row 0's output.
void RunRowsOf(const ProductPlan& p, const uint8_t* w, int64_t w_stride, int64_t begin,
               int64_t end, int64_t n_batch, float* y) {
  const int64_t y_stride = p.w->rows;
  if (p.stripes != nullptr) {
    p.stripes(w, w_stride, begin, end, p.n_blocks, p.act, p.act_stride, n_batch, y, y_stride);
    return;
  }
  if (p.gemm != nullptr) {
    p.gemm(w, w_stride, begin, end, p.n_blocks, p.panels, n_batch, y, y_stride);
    return;
  }
  for (int64_t r0 = begin; r0 < end; r0 += p.tile_rows) {
    const int64_t r1 = std::min(end, r0 + p.tile_rows);
    for (int64_t b = 0; b < n_batch; b += kMaxActRows) {
      const int n_act = static_cast<int>(std::min<int64_t>(kMaxActRows, n_batch - b));
      for (int64_t r = r0; r < r1; ++r) {
        p.dot(w + r * w_stride, p.n_blocks, p.act + b * p.act_stride, p.act_stride, n_act,
              y + b * y_stride + r, y_stride);
      }
    }
  }
}

// Rows [begin, end) of one product.
void RunRows(const ProductPlan& p, int64_t begin, int64_t end, int64_t n_batch) {
  const QuantMatrix& w = *p.w;
  if (!p.to_gguf) {
    RunRowsOf(p, w.row(0), w.row_bytes, begin, end, n_batch, p.y);
    return;
  }
  // Tiles of rows converted to GGUF in a cached buffer, then run as GGUF rows 0.. of it. The
  // tiled path takes 16 rows at a time (whole output groups of GemmRowsOf); striped weights
  // give them as one whole stripe (ranges and chunks are cut at multiples of 16).
  const int64_t tile = p.gemm != nullptr ? 16 : p.tile_rows;
  const bool whole_stripes = w.layout == WeightLayout::kStripes16 && p.gemm != nullptr;
  thread_local std::vector<uint8_t> rows;
  rows.resize(static_cast<size_t>(tile * p.gguf_row_bytes));
  for (int64_t r0 = begin; r0 < end; r0 += tile) {
    const int64_t n = std::min(end - r0, tile);
    if (whole_stripes) {
      (p.vnni ? UnstripeRowsAvx512 : UnstripeRows)(w.type, w.row(r0), p.n_blocks, rows.data(),
                                                   p.gguf_row_bytes);
    } else {
      for (int64_t r = 0; r < n; ++r) {
        ReadGgufRow(w, r0 + r, rows.data() + r * p.gguf_row_bytes);
      }
    }
    RunRowsOf(p, rows.data(), p.gguf_row_bytes, 0, n, n_batch, p.y + r0);
  }
}

}  // namespace

absl::Status MatMulQ(const QuantMatrix& w, const float* x, int64_t n_batch, float* y,
                     ThreadPool* pool, MatMulScratch* scratch, const MatMulOptions& options) {
  const MatMulProduct product{&w, y};
  return MatMulQMany(&product, 1, x, n_batch, pool, scratch, options);
}

absl::Status MatMulQMany(const MatMulProduct* products, int n_products, const float* x,
                         int64_t n_batch, ThreadPool* pool, MatMulScratch* scratch,
                         const MatMulOptions& options, const PrepareRowFn* prepare) {
  if (n_products < 1 || n_products > kMaxMatMulProducts || products == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQMany: ", n_products,
                                                   " products; 1 to ", kMaxMatMulProducts, " allowed"));
  }
  for (int i = 0; i < n_products; ++i) {
    if (products[i].w == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("MatMulQMany: product ", i, " has no weight"));
    }
    absl::Status s = CheckWeight(*products[i].w, n_batch);
    if (s.ok() && products[i].w->cols != products[0].w->cols) {
      s = absl::InvalidArgumentError(absl::StrCat("MatMulQ: ", products[i].w->cols,
                                                  " columns, but the input has ",
                                                  products[0].w->cols));
    }
    if (!s.ok()) {
      if (n_products == 1) return s;
      return absl::Status(s.code(), absl::StrCat("product ", i, ": ", s.message()));
    }
  }
  if (!CpuIsaAvailable(options.isa)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MatMulQ: instruction set ", std::string(CpuIsaName(options.isa)),
        " was requested but this CPU ", "supports only: ", CpuFeaturesString(GetCpuFeatures())));
  }
  bool any_rows = false;
  for (int i = 0; i < n_products; ++i) any_rows = any_rows || products[i].w->rows > 0;
  if (n_batch == 0 || !any_rows) {
    for (int64_t b = 0; prepare != nullptr && b < n_batch; ++b) (*prepare)(b);
    return absl::OkStatus();
  }
  if (x == nullptr || scratch == nullptr) {
    return absl::InvalidArgumentError("MatMulQ: null weight, input, output or scratch pointer");
  }
  for (int i = 0; i < n_products; ++i) {
    if (products[i].w->rows > 0 && (products[i].w->data == nullptr || products[i].y == nullptr)) {
      return absl::InvalidArgumentError("MatMulQ: null weight, input, output or scratch pointer");
    }
  }

  const int64_t cols = products[0].w->cols;
  // One share per thread, or one in all while the pool runs its jobs on the caller alone (its
  // workers found without CPUs of their own): one stream per product, not two taken in turn.
  const int n_threads = pool == nullptr ? 1 : pool->ParallelismNow();
  ProductPlan plans[kMaxMatMulProducts];
  // Which quantized activation formats (and, per format, whether packed panels) are needed.
  bool need_rows[3] = {}, need_panels[3] = {};
  for (int i = 0; i < n_products; ++i) {
    const QuantMatrix& w = *products[i].w;
    const QuantTraits* traits = FindQuantTraits(w.type);
    ProductPlan& p = plans[i];
    p.w = &w;
    p.y = products[i].y;
    const bool interleaved = w.layout == WeightLayout::kInterleaved8;
    const bool striped = w.layout == WeightLayout::kStripes16;
    const bool vnni = options.isa == CpuIsa::kAvx512Vnni || options.isa == CpuIsa::kAmx;
    p.stripes = striped && vnni ? Avx512VnniStripeRows(w.type) : nullptr;
    // Striped Q6_K runs its kernel up to kStripeKMaxBatch sequences; larger batches (prefill)
    // go faster through the tiled kernel on GGUF copies of the rows (a copy per 16 rows is
    // little next to that many sequences' arithmetic).
    if (w.type == GgmlType::kQ6_K && n_batch > kStripeKMaxBatch) p.stripes = nullptr;
    p.dot = interleaved && vnni ? Avx512VnniInterleavedRowDot(w.type)
                                : FindRowDot(w.type, options.isa);
    const ActFormat format = ActFormatFor(w.type);
    int64_t min_batch = options.gemm_min_batch;
    if (format == ActFormat::kBlock256) {
      min_batch = options.kquant_gemm_min_batch > 0 ? options.kquant_gemm_min_batch
                  : vnni                            ? kDefaultKQuantGemmMinBatch
                                                    : kDefaultKQuantGemmMinBatchAvx2;
    }
    p.gemm = n_batch >= min_batch && p.stripes == nullptr ? FindGemmRows(w.type, options.isa)
                                                          : nullptr;
    if (interleaved && vnni && p.gemm != nullptr) {
      p.gemm = options.isa == CpuIsa::kAmx ? AmxInterleavedGemmRows(w.type)
                                           : Avx512VnniInterleavedGemmRows(w.type);
    }
    p.to_gguf = (interleaved && !vnni) || (striped && p.stripes == nullptr);
    p.vnni = vnni;
    p.gguf_row_bytes = *RowBytes(*traits, cols);
    p.act_stride = ActRowBytes(format, cols);
    p.act = reinterpret_cast<const uint8_t*>(x);
    p.panels = nullptr;
    p.n_blocks = cols / traits->block_elems;
    p.tile_rows = std::max<int64_t>(1, kTileWeightBytes / *RowBytes(*traits, cols));
    const int64_t eighth = (w.rows / (8 * static_cast<int64_t>(n_threads)) + 15) / 16 * 16;
    const int64_t most =
        n_batch == 1 ? eighth : std::max<int64_t>(16, kMaxChunkBytes / w.row_bytes / 16 * 16);
    p.chunk_rows = std::max<int64_t>(16, std::min(eighth, most));
    need_rows[static_cast<int>(format)] = true;
    if (p.gemm != nullptr) need_panels[static_cast<int>(format)] = true;
  }

  // Each needed format's rows (then its panels) in one scratch buffer, 64-byte aligned: aligned
  // vector loads, no line splits; the rows and panels are multiples of 64 bytes.
  // The tiled kernels' panels: 16-row panels of the 32-element blocks or of the super-blocks.
  auto panel_bytes = [&](ActFormat f) {
    return f == ActFormat::kBlock32 ? GemmPanelBytes(n_batch, cols / 32)
                                    : KGemmPanelBytes(n_batch, cols / 256);
  };
  int64_t offset[3] = {}, total = 0;
  for (ActFormat f : kQuantizedFormats) {
    const int fi = static_cast<int>(f);
    if (!need_rows[fi]) continue;
    offset[fi] = total;
    total += (n_batch * ActRowBytes(f, cols) + 63) / 64 * 64;
    if (need_panels[fi]) total += panel_bytes(f);
  }
  // A batch without panels has its rows quantized by the threads of the product's fork-join,
  // each its own share first (the rows the caller and the other core wrote would otherwise all
  // cross to the caller, and the quantized ones back). The tiled kernels' panels are packed
  // from all the rows, by the caller.
  bool any_panels = false;
  for (bool p : need_panels) any_panels = any_panels || p;
  const bool avx2 = options.isa != CpuIsa::kScalar;
  const int64_t threads_quantize =
      n_threads > 1 && n_batch >= kParallelQuantizeMinBatch && !any_panels ? n_batch : 0;
  if (prepare != nullptr && threads_quantize == 0) {
    // The rows the caller quantizes (or the kernels read as floats), prepared first: on the
    // pool's threads for a batch (16 rows of a 1536-wide SwiGLU take one core 14-17 us).
    const int prep_threads = pool == nullptr || n_batch < 2 ? 1 : n_threads;
    auto prepare_share = [&](int thread, int n) {
      int64_t begin, end;
      ThreadPool::Share(n_batch, thread, n, 1, &begin, &end);
      for (int64_t b = begin; b < end; ++b) (*prepare)(b);
    };
    if (prep_threads == 1) {
      prepare_share(0, 1);
    } else {
      pool->Run([&](int thread, int n) {
        if (thread < prep_threads) prepare_share(thread, std::min(n, prep_threads));
      });
    }
  }
  uint8_t* format_rows[3] = {};
  if (total > 0) {
    scratch->activations.resize(static_cast<size_t>(total + 64));
    uint8_t* base = scratch->activations.data();
    base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
    for (ActFormat f : kQuantizedFormats) {
      const int fi = static_cast<int>(f);
      if (!need_rows[fi]) continue;
      uint8_t* rows = base + offset[fi];
      format_rows[fi] = rows;
      const int64_t stride = ActRowBytes(f, cols);
      if (threads_quantize == 0) QuantizeActivations(f, avx2, x, n_batch, cols, rows);
      uint8_t* panels = rows + (n_batch * stride + 63) / 64 * 64;
      if (need_panels[fi]) {
        if (f == ActFormat::kBlock32) {
          PackGemmPanels(rows, stride, n_batch, cols / 32, panels);
        } else {
          PackKGemmPanels(rows, stride, n_batch, cols / 256, panels);
        }
      }
      for (int i = 0; i < n_products; ++i) {
        if (ActFormatFor(plans[i].w->type) != f) continue;
        plans[i].act = rows;
        if (plans[i].gemm != nullptr) plans[i].panels = panels;
      }
    }
  }

  if (scratch->n_cursor_lines < n_threads) {
    scratch->cursor_lines = std::make_unique<RowCursorLine[]>(static_cast<size_t>(n_threads));
    scratch->n_cursor_lines = n_threads;
  }
  RowRanges ranges(plans, n_products, n_threads, threads_quantize, scratch->cursor_lines.get());
  // Activation row b in every needed format; then counted as done by `thread`.
  auto quantize_row = [&](int thread, int64_t b) {
    if (prepare != nullptr) (*prepare)(b);
    for (ActFormat f : kQuantizedFormats) {
      const int fi = static_cast<int>(f);
      if (!need_rows[fi]) continue;
      QuantizeActivations(f, avx2, x + b * cols, 1, cols,
                          format_rows[fi] + b * ActRowBytes(f, cols));
    }
    ranges.ActivationsDone(thread, 1);
  };
  auto work = [&](int thread, int /*n_threads*/) {
    if (thread >= n_threads) return;  // the pool went back to its workers since
    if (threads_quantize > 0) {
      // Own activation rows, then the others' from their backs; then wait for rows another
      // thread has claimed and is still quantizing. Every claimed row is on a running thread
      // (a pool that runs the indices one after another has the first claim them all), so the
      // wait ends.
      int64_t b;
      while (ranges.ClaimActivation(thread, /*front=*/true, &b)) quantize_row(thread, b);
      for (int v = 1; v < n_threads; ++v) {
        while (ranges.ClaimActivation((thread + v) % n_threads, /*front=*/false, &b)) {
          quantize_row(thread, b);
        }
      }
      while (ranges.ActivationsDoneByAll() < threads_quantize) ThreadPool::Relax();
    }
    int64_t begin, end;
    // This thread's own ranges, front to back, product by product; then what is left of the
    // others', from their backs.
    for (int i = 0; i < n_products; ++i) {
      while (ranges.ClaimFront(i, thread, &begin, &end)) RunRows(plans[i], begin, end, n_batch);
    }
    for (int i = 0; i < n_products; ++i) {
      for (int v = 1; v < n_threads; ++v) {
        const int victim = (thread + v) % n_threads;
        while (ranges.ClaimBack(i, victim, &begin, &end)) RunRows(plans[i], begin, end, n_batch);
      }
    }
  };
  if (pool == nullptr || pool->size() == 1) {
    work(0, 1);
  } else {
    pool->Run(work);
  }
  return absl::OkStatus();
}

}  // namespace tessera
