// MatMulQ: validation, activation quantization, and the split of weight rows across threads.
// The arithmetic lives in the per-ISA kernel files (dot_kernels.h).
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/quant/types.h"

namespace tessera {
namespace {

// Weight bytes a thread works on before moving to the next group of activation rows: small
// enough to stay in L1/L2 while every activation row passes over it, so a batch reads each
// weight byte from memory once.
constexpr int64_t kTileWeightBytes = 16 * 1024;

// Kernel for `type` on `isa`, falling back to the next lower instruction set.
RowDotFn FindRowDot(GgmlType type, CpuIsa isa) {
  RowDotFn fn = nullptr;
  if (isa == CpuIsa::kAvx512Vnni) fn = Avx512VnniRowDot(type);
  // AVX-512 without VNNI has no kernels of its own: for these memory-bound loops its wider
  // registers buy little over AVX2 (and Zen 4 splits them anyway), so it runs the AVX2 ones.
  if (fn == nullptr && isa != CpuIsa::kScalar) fn = Avx2RowDot(type);
  if (fn == nullptr) fn = ScalarRowDot(type);
  return fn;
}

// Tiled kernel for `type` on `isa`, or nullptr (scalar, or a type without one).
GemmRowsFn FindGemmRows(GgmlType type, CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512Vnni:
      return Avx512VnniGemmRows(type);
    case CpuIsa::kAvx512:
    case CpuIsa::kAvx2:
      return Avx2GemmRows(type);
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
  }
  return "unknown";
}

CpuIsa DetectCpuIsa() {
  const CpuFeatures& f = GetCpuFeatures();
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
  }
  return false;
}

bool MatMulSupports(GgmlType type) {
  return FindQuantTraits(type) != nullptr && ScalarRowDot(type) != nullptr;
}

MatMulOptions::MatMulOptions() : isa(DetectCpuIsa()) {}

absl::Status MatMulQ(const QuantMatrix& w, const float* x, int64_t n_batch, float* y,
                     ThreadPool* pool, MatMulScratch* scratch, const MatMulOptions& options) {
  const QuantTraits* traits = FindQuantTraits(w.type);
  if (traits == nullptr || !MatMulSupports(w.type)) {
    return absl::UnimplementedError(absl::StrCat("MatMulQ: weight type ", GgmlTypeName(w.type),
                                                 " (id ", static_cast<uint32_t>(w.type),
                                                 ") has no CPU kernel"));
  }
  if (!CpuIsaAvailable(options.isa)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MatMulQ: instruction set ", std::string(CpuIsaName(options.isa)),
        " was requested but this CPU ", "supports only: ", CpuFeaturesString(GetCpuFeatures())));
  }
  if (w.rows < 0 || w.cols <= 0 || n_batch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulQ: bad shape: ", w.rows, " rows x ", w.cols, " cols, batch ", n_batch));
  }
  const absl::StatusOr<int64_t> row_bytes = RowBytes(*traits, w.cols);
  if (!row_bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulQ: ", row_bytes.status().message()));
  }
  if (w.row_bytes < *row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulQ: row stride ", w.row_bytes, " bytes is less than the ", *row_bytes,
                     " bytes of one ", traits->name, " row of ", w.cols, " elements"));
  }
  if (w.rows == 0 || n_batch == 0) return absl::OkStatus();
  if (w.data == nullptr || x == nullptr || y == nullptr || scratch == nullptr) {
    return absl::InvalidArgumentError("MatMulQ: null weight, input, output or scratch pointer");
  }

  const RowDotFn dot = FindRowDot(w.type, options.isa);
  const GemmRowsFn gemm =
      n_batch >= options.gemm_min_batch ? FindGemmRows(w.type, options.isa) : nullptr;
  const ActFormat format = ActFormatFor(w.type);
  const int64_t act_stride = ActRowBytes(format, w.cols);
  const int64_t n_blocks = w.cols / traits->block_elems;
  const uint8_t* act = reinterpret_cast<const uint8_t*>(x);
  const uint8_t* panels = nullptr;
  if (format != ActFormat::kFloat) {
    // 64 spare bytes to start the rows on a cache line (aligned vector loads, no line splits);
    // the tiled path's panels follow the rows (a multiple of 64 bytes).
    const int64_t panel_bytes = gemm != nullptr ? GemmPanelBytes(n_batch, n_blocks) : 0;
    scratch->activations.resize(static_cast<size_t>(n_batch * act_stride + panel_bytes + 64));
    uint8_t* base = scratch->activations.data();
    base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
    QuantizeActivations(format, options.isa != CpuIsa::kScalar, x, n_batch, w.cols, base);
    act = base;
    if (gemm != nullptr) {
      uint8_t* packed = base + n_batch * act_stride;
      PackGemmPanels(act, act_stride, n_batch, n_blocks, packed);
      panels = packed;
    }
  }

  const int64_t tile_rows = std::max<int64_t>(1, kTileWeightBytes / *row_bytes);
  const int64_t rows = w.rows;
  // Rows are handed out in contiguous chunks from a shared counter rather than as one fixed
  // share per thread. Each chunk is still a long sequential stream (friendly to the
  // prefetchers, and outputs of different threads only meet at chunk edges, multiples of 16
  // rows = 64-byte lines of y), but a thread that is slowed down (a core shared with other
  // work) no longer holds everyone up at the join: the others take its remaining chunks.
  const int n_threads = pool == nullptr ? 1 : pool->size();
  const int64_t chunk_rows =
      std::max<int64_t>(16, (rows / (8 * static_cast<int64_t>(n_threads)) + 15) / 16 * 16);
  std::atomic<int64_t> next_row{0};
  auto work = [&](int /*thread*/, int /*n_threads*/) {
    for (;;) {
      const int64_t begin = next_row.fetch_add(chunk_rows, std::memory_order_relaxed);
      if (begin >= rows) return;
      const int64_t end = std::min(rows, begin + chunk_rows);
      if (gemm != nullptr) {
        gemm(w.row(0), w.row_bytes, begin, end, n_blocks, panels, n_batch, y, rows);
        continue;
      }
      for (int64_t r0 = begin; r0 < end; r0 += tile_rows) {
        const int64_t r1 = std::min(end, r0 + tile_rows);
        for (int64_t b = 0; b < n_batch; b += kMaxActRows) {
          const int n_act = static_cast<int>(std::min<int64_t>(kMaxActRows, n_batch - b));
          for (int64_t r = r0; r < r1; ++r) {
            dot(w.row(r), n_blocks, act + b * act_stride, act_stride, n_act, y + b * rows + r,
                rows);
          }
        }
      }
    }
  };
  if (n_threads == 1 || rows <= chunk_rows) {
    work(0, 1);
  } else {
    pool->Run(work);
  }
  return absl::OkStatus();
}

}  // namespace tessera
