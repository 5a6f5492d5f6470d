// The tiled GEMM loops shared by gemm_avx512vnni.cc and gemm_avx2.cc (layout and numerics:
// gemm_kernels.h). Internal linkage on purpose, like simd_x86.h: each including file
// instantiates them with its own ISA flags.
//
// Ops (one vector width on one ISA) provides:
//   I, F                 int32 / float vectors; kVecs of them cover a 16-row panel
//   kBiased              whether Dot multiplies the biased (+128) activation codes, so that the
//                        accumulator starts at -128 * sum(codes) of the weight block
//   LoadA(p), Bcast(p)   64 / (32 kVecs) bytes of panel codes; one 32-bit weight group to all lanes
//   Dot(acc, a, w)       acc + per-lane sum of 4 products of a's bytes with w's bytes (exact)
//   DotB(acc, a, p)      Dot(acc, a, Bcast(p))
//   ZeroI, SetI, ZeroF, SetF, LoadF, StoreF, Cvt, Mul, Add, Opaque (blocks FMA contraction)
// Fmt is a block format of block32_avx2.h / block32_avx512vnni.h (kBytes, kSignedCodes,
// kCodeBias = 0, Codes, kOffsetFactor and kOffsetField): w = d * code + off_w with
// off_w = kOffsetFactor * (the fp16 at kOffsetField), as in dot_scalar.cc.
#ifndef TESSERA_KERNELS_CPU_GEMM_X86_H_
#define TESSERA_KERNELS_CPU_GEMM_X86_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/simd_x86.h"
#include "kernels/quant/interleave.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

// A decoded weight row: codes[32 n_blocks] int8 | bias[n_blocks] int32 (-128 * block code sum)
// | d[n_blocks] float | off[n_blocks] float.
struct DecodedRow {
  const int8_t* codes;
  const int32_t* bias;
  const float* d;
  const float* off;
};

inline int64_t DecodedRowBytes(int64_t n_blocks) { return (n_blocks * 44 + 63) / 64 * 64; }

inline DecodedRow ViewDecodedRow(const uint8_t* p, int64_t n_blocks) {
  return {reinterpret_cast<const int8_t*>(p), reinterpret_cast<const int32_t*>(p + 32 * n_blocks),
          reinterpret_cast<const float*>(p + 36 * n_blocks),
          reinterpret_cast<const float*>(p + 40 * n_blocks)};
}

// Prefetches the row `next` (`bytes` long) into L2 in step with the decoding of another row:
// UpTo(n) issues the prefetches of next's first n bytes not yet issued. Spread over a row's
// blocks, a few per block, the prefetches leave the miss buffers to the decoder's own loads;
// issued as one burst per row (PrefetchNextRow) they stalled the decoder: decode batches of 16
// ran 20-35% slower than with the weights in L2.
class RowPrefetcher {
 public:
  RowPrefetcher() = default;
  RowPrefetcher(const uint8_t* next, int64_t bytes) : next_(next), end_(bytes) {}
  void UpTo(int64_t n) {
    // Lines of next_ + done_ on; the last line of the row is covered by the step past end_.
    for (const int64_t stop = std::min(n, end_ + 63); done_ < stop; done_ += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(next_ + done_), _MM_HINT_T1);
    }
  }
  void Finish() { UpTo(end_ + 63); }

 private:
  const uint8_t* next_ = nullptr;
  int64_t end_ = 0;  // nothing to prefetch by default
  int64_t done_ = 0;
};

// The prefetcher of row i of the group after the one at w (MR rows of w_stride bytes): row
// MR + i of w when i < next_rows, else one that prefetches nothing.
template <int MR>
inline RowPrefetcher NextRowPrefetcher(const uint8_t* w, int64_t w_stride, int i, int next_rows) {
  if (i >= next_rows) return RowPrefetcher();
  return RowPrefetcher(w + (MR + i) * w_stride, w_stride);
}

// The blocks of a weight row as the GEMM decoders read them: Blocks::ForEach(row, n_blocks, fn)
// calls fn(k, codes, d, field) for k = 0 .. n_blocks - 1 in order, with block k's 32 codes
// (bytes, element order), its d and its offset field (the fp16 at Fmt::kOffsetField) as
// floats. GgufBlocks reads the GGUF layout; InterleavedBlocks the interleaved one
// (kernels/quant/interleave.h: groups of eight blocks, then the tail's r < 8).
template <typename Fmt>
struct GgufBlocks {
  template <typename Fn>
  static void ForEach(const uint8_t* row, int64_t n_blocks, Fn&& fn) {
    for (int64_t k = 0; k < n_blocks; ++k) {
      const uint8_t* b = row + k * Fmt::kBytes;
      // Every 32-element format stores d first.
      fn(k, Fmt::Codes(b), LoadFp16(b), LoadFp16(b + Fmt::kOffsetField));
    }
  }
};

template <typename Fmt>
struct InterleavedBlocks {
  template <typename Fn>
  static void ForEach(const uint8_t* row, int64_t n_blocks, Fn&& fn) {
    constexpr int64_t kGroupBytes = 8 * Fmt::kBytes;
    const __m256i low = _mm256_set1_epi8(0x0F);
    const int64_t n_groups = n_blocks / 8;
    for (int64_t g = 0; g < n_groups; ++g) {
      const uint8_t* grp = row + g * kGroupBytes;
      // Block j: chunk j / 4, bytes 32 (j mod 2) on, high nibbles for j mod 4 >= 2; the fp16
      // field f (d = 0, m = 1) of block j at 128 + 16 f + 2 j.
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256i v = Load256(grp + 64 * (j / 4) + 32 * (j % 2));
        const __m256i codes = _mm256_and_si256((j & 2) != 0 ? _mm256_srli_epi16(v, 4) : v, low);
        fn(8 * g + j, codes, LoadFp16(grp + kInterleavedCodeBytes + 2 * j),
           LoadFp16(grp + kInterleavedCodeBytes + 8 * Fmt::kOffsetField + 2 * j));
      }
    }
    // The tail: r < 8 blocks, nibbles at 16 j, then d[r] and the offset field's r values.
    const int64_t k0 = 8 * n_groups;
    const int r = static_cast<int>(n_blocks - k0);
    const uint8_t* tail = row + n_groups * kGroupBytes;
    for (int j = 0; j < r; ++j) {
      fn(k0 + j, Nibbles32(tail + 16 * j), LoadFp16(tail + 16 * r + 2 * j),
         LoadFp16(tail + 16 * r + r * Fmt::kOffsetField + 2 * j));
    }
  }
};

// The blocks of one weight row (read through Blocks) in chain-major order (gemm_kernels.h),
// like the panels. The weights are read in storage order (a sequential stream from memory);
// the scattered writes stay in the thread's cached buffer.
template <typename Fmt, typename Blocks = GgufBlocks<Fmt>>
void DecodeRow(const uint8_t* w, int64_t n_blocks, uint8_t* out, RowPrefetcher* prefetch) {
  static_assert(Fmt::kCodeBias == 0, "the GEMM multiplies the codes as they are");
  auto* bias = reinterpret_cast<int32_t*>(out + 32 * n_blocks);
  auto* d = reinterpret_cast<float*>(out + 36 * n_blocks);
  auto* off = reinterpret_cast<float*>(out + 40 * n_blocks);
  int64_t start[kSumChains];
  for (int c = 0; c < kSumChains; ++c) start[c] = ChainStart(c, n_blocks);
  Blocks::ForEach(w, n_blocks, [&](int64_t k, __m256i codes, float dk, float field) {
    const int64_t s = start[k % kSumChains] + k / kSumChains;
    prefetch->UpTo((k + 1) * Fmt::kBytes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * s), codes);
    // Sum of the codes: vpsadbw against zero sums unsigned bytes; signed codes are biased.
    const __m256i u = Fmt::kSignedCodes
                          ? _mm256_xor_si256(codes, _mm256_set1_epi8(static_cast<char>(0x80)))
                          : codes;
    const __m256i sad = _mm256_sad_epu8(u, _mm256_setzero_si256());
    const __m128i s2 =
        _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
    int32_t sum = static_cast<int32_t>(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1));
    if (Fmt::kSignedCodes) sum -= 32 * 128;
    bias[s] = -128 * sum;
    d[s] = dk;
    off[s] = Fmt::kOffsetFactor * field;
  });
}

// out[i] = CombineChains over the eight chain sums chains[c * n + i] (c = 0..7), i < n, a whole
// number of Ops vectors: the fixed tree of dot_kernels.h, lane by lane.
template <typename Ops>
inline void StoreChainSums(const float* chains, int n, float* out) {
  for (int i = 0; i < n; i += 16 / Ops::kVecs) {
    auto at = [&](int c) { return Ops::LoadF(chains + c * n + i); };
    const auto sum = Ops::Add(Ops::Add(Ops::Add(at(0), at(4)), Ops::Add(at(2), at(6))),
                              Ops::Add(Ops::Add(at(1), at(5)), Ops::Add(at(3), at(7))));
    Ops::StoreF(out + i, sum);
  }
}

// One MR x (16 NP) tile: MR decoded weight rows against NP panels, over all blocks, in the
// canonical order of dot_kernels.h: chain by chain (blocks c, c + 8, c + 16, ... into fresh
// accumulators; stored consecutively, slots ChainStart(c) .. ChainStart(c + 1) - 1), each
// chain's sums parked in `chains`, and CombineChains applied lane by lane at the end.
// out[(r * NP + p) * 16 + lane].
template <typename Ops, typename Fmt, int MR, int NP>
void GemmTile(const DecodedRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
  using I = typename Ops::I;
  using F = typename Ops::F;
  constexpr int V = Ops::kVecs;
  constexpr int kLaneBytes = 64 / V;  // code bytes of one vector of one group
  constexpr int kTileFloats = MR * NP * 16;
  alignas(64) float chains[kSumChains][kTileFloats];
  for (int c = 0; c < kSumChains; ++c) {
    F acc[MR][NP][V];
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NP; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = Ops::ZeroF();
    const int64_t end = ChainStart(c + 1, n_blocks);
    for (int64_t k = ChainStart(c, n_blocks); k < end; ++k) {  // k: slot, not block index
      const uint8_t* pb[NP];
      for (int p = 0; p < NP; ++p) pb[p] = panel[p] + k * kGemmPanelBlockBytes;
      I is[MR][NP][V];
      for (int r = 0; r < MR; ++r) {
        const I seed = Ops::kBiased ? Ops::SetI(rows[r].bias[k]) : Ops::ZeroI();
        for (int p = 0; p < NP; ++p)
          for (int v = 0; v < V; ++v) is[r][p][v] = seed;
      }
      for (int g = 0; g < 8; ++g) {
        I a[NP][V];
        for (int p = 0; p < NP; ++p)
          for (int v = 0; v < V; ++v) a[p][v] = Ops::LoadA(pb[p] + 64 * g + kLaneBytes * v);
        for (int r = 0; r < MR; ++r)
          for (int p = 0; p < NP; ++p)
            for (int v = 0; v < V; ++v) {
              is[r][p][v] = Ops::DotB(is[r][p][v], a[p][v], rows[r].codes + 32 * k + 4 * g);
            }
      }
      // The canonical term, lane by lane: t = ((d_w * d_a) * dot) + off_w * ds.
      for (int p = 0; p < NP; ++p) {
        for (int v = 0; v < V; ++v) {
          const F da = Ops::LoadF(reinterpret_cast<const float*>(pb[p] + 512) + 16 / V * v);
          const F ds = Ops::LoadF(reinterpret_cast<const float*>(pb[p] + 576) + 16 / V * v);
          for (int r = 0; r < MR; ++r) {
            F t = Ops::Opaque(
                Ops::Mul(Ops::Mul(Ops::SetF(rows[r].d[k]), da), Ops::Cvt(is[r][p][v])));
            if constexpr (Fmt::kOffsetFactor != 0.0f) {
              t = Ops::Add(t, Ops::Opaque(Ops::Mul(Ops::SetF(rows[r].off[k]), ds)));
            }
            acc[r][p][v] = Ops::Add(acc[r][p][v], t);
          }
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NP; ++p)
        for (int v = 0; v < V; ++v)
          Ops::StoreF(chains[c] + (r * NP + p) * 16 + 16 / V * v, acc[r][p][v]);
  }
  StoreChainSums<Ops>(chains[0], kTileFloats, out);
}

// A tile: rows[0 .. MR) (decoded, Layout::RowBytes apart in one buffer) against the panels
// panel[0 .. NP), out[(r * NP + p) * 16 + lane]. Only the first mr rows and np panels of the
// chosen tile are meaningful; the rest of rows[] points at stale but readable buffer memory.
template <typename Row>
using TileFnFor = void (*)(const Row* rows, const uint8_t* const* panel, int64_t n_blocks,
                           float* out);
using TileFn = TileFnFor<DecodedRow>;

// The tile function Tiles::Tile<mr, np> for mr <= MR rows and np <= NP panels (edge tiles are
// smaller tiles, not padded ones, so no work is wasted on rows that do not exist).
template <typename Row, typename Tiles, int MR, int NP>
TileFnFor<Row> SelectTileOf(int mr, int np) {
  if constexpr (MR > 1) {
    if (mr < MR) return SelectTileOf<Row, Tiles, MR - 1, NP>(mr, np);
  }
  if constexpr (NP > 1) {
    if (np < NP) return SelectTileOf<Row, Tiles, MR, NP - 1>(mr, np);
  }
  return Tiles::template Tile<MR, NP>;
}

template <typename Ops, typename Fmt>
struct Block32Tiles {
  template <int MR, int NP>
  static void Tile(const DecodedRow* rows, const uint8_t* const* panel, int64_t n_blocks,
                   float* out) {
    GemmTile<Ops, Fmt, MR, NP>(rows, panel, n_blocks, out);
  }
};

template <typename Ops, typename Fmt, int MR, int NP>
TileFn SelectTile(int mr, int np) {
  return SelectTileOf<DecodedRow, Block32Tiles<Ops, Fmt>, MR, NP>(mr, np);
}

// Decodes the mr <= MR weight rows at w (w_stride bytes apart) into dec (rows
// Layout::RowBytes apart) and points rows[0 .. MR) at them; rows past mr point at the buffer's
// stale rows. The next group's first next_rows rows (MR rows on) start on their way to L2 one
// row per decoded row (PrefetchNextRow), so that they arrive while this group's tiles run
// without a burst of prefetches that fills the line-fill buffers and stalls the decoder.
template <typename Row>
using DecodeGroupFnFor = void (*)(const uint8_t* w, int64_t w_stride, int mr, int next_rows,
                                  int64_t n_blocks, uint8_t* dec, Row* rows);
using DecodeGroupFn = DecodeGroupFnFor<DecodedRow>;

// What GemmRowsOf needs of a family of block formats: the decoded row (Row), the buffer bytes
// of one decoded row (RowBytes), and the panel bytes per block (kPanelBlockBytes).
struct Block32Layout {
  using Row = DecodedRow;
  static int64_t RowBytes(int64_t n_blocks) { return DecodedRowBytes(n_blocks); }
  static constexpr int64_t kPanelBlockBytes = kGemmPanelBlockBytes;
};

// Row i of the group after the one at w (MR rows of w_stride bytes), when i < next_rows.
template <int MR>
inline void PrefetchNextRow(const uint8_t* w, int64_t w_stride, int i, int next_rows) {
  if (i >= next_rows) return;
  const uint8_t* row = w + (MR + i) * w_stride;
  for (int64_t off = 0; off < w_stride; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(row + off), _MM_HINT_T1);
  }
}

template <typename Fmt, int MR, typename Blocks = GgufBlocks<Fmt>>
void DecodeGroup(const uint8_t* w, int64_t w_stride, int mr, int next_rows, int64_t n_blocks,
                 uint8_t* dec, DecodedRow* rows) {
  const int64_t dec_bytes = DecodedRowBytes(n_blocks);
  for (int i = 0; i < MR; ++i) {
    RowPrefetcher prefetch = NextRowPrefetcher<MR>(w, w_stride, i, next_rows);
    if (i < mr) {
      DecodeRow<Fmt, Blocks>(w + i * w_stride, n_blocks, dec + i * dec_bytes, &prefetch);
    }
    prefetch.Finish();
    rows[i] = ViewDecodedRow(dec + i * dec_bytes, n_blocks);
  }
}

// GemmRowsFn (gemm_kernels.h). Weight rows are taken MR at a time: decoded once into the
// thread's buffer (a few KiB per row, stays in L1/L2), then every panel pair passes over them.
// The results of up to kOutRows consecutive rows gather in a cached buffer, batch row by batch
// row, and go to y as one contiguous run per batch row: y's rows are w.rows floats apart, so
// writing each tile's outputs straight to y would touch a different cache line per element.
// Select(mr, np) picks the tile for mr <= MR rows and np <= NP panels; Decode fills the rows.
template <typename Layout, int MR, int NP, TileFnFor<typename Layout::Row> (*Select)(int, int),
          DecodeGroupFnFor<typename Layout::Row> Decode>
void GemmRowsOf(const uint8_t* w, int64_t w_stride, int64_t row_begin, int64_t row_end,
                int64_t n_blocks, const uint8_t* panels, int64_t n_batch, float* y,
                int64_t y_stride) {
  constexpr int kOutRows = 16;
  static_assert(kOutRows % MR == 0, "a group of output rows is whole tiles");
  thread_local std::vector<uint8_t> buffer;
  thread_local std::vector<float> gathered;
  const int64_t dec_bytes = Layout::RowBytes(n_blocks);
  buffer.resize(static_cast<size_t>(MR * dec_bytes + 64));  // new bytes are zeros
  gathered.resize(static_cast<size_t>(n_batch * kOutRows));
  uint8_t* dec = buffer.data();
  dec += (64 - reinterpret_cast<uintptr_t>(dec) % 64) % 64;
  const int64_t n_panels = (n_batch + kGemmPanelRows - 1) / kGemmPanelRows;
  alignas(64) float out[MR * NP * 16];
  typename Layout::Row rows[MR];
  for (int64_t g0 = row_begin; g0 < row_end; g0 += kOutRows) {
    const int g_rows = static_cast<int>(std::min<int64_t>(kOutRows, row_end - g0));
    for (int64_t r0 = g0; r0 < g0 + g_rows; r0 += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, g0 + g_rows - r0));
      const int next_rows = static_cast<int>(std::clamp<int64_t>(row_end - r0 - MR, 0, MR));
      Decode(w + r0 * w_stride, w_stride, mr, next_rows, n_blocks, dec, rows);
      for (int64_t p0 = 0; p0 < n_panels; p0 += NP) {
        const int np = static_cast<int>(std::min<int64_t>(NP, n_panels - p0));
        const uint8_t* panel[NP];
        for (int p = 0; p < np; ++p) {
          panel[p] = panels + (p0 + p) * n_blocks * Layout::kPanelBlockBytes;
        }
        Select(mr, np)(rows, panel, n_blocks, out);
        for (int p = 0; p < np; ++p) {
          const int64_t b0 = (p0 + p) * kGemmPanelRows;
          const int lanes = static_cast<int>(std::min<int64_t>(kGemmPanelRows, n_batch - b0));
          float* dst = gathered.data() + b0 * kOutRows + (r0 - g0);
          for (int i = 0; i < mr; ++i) {
            const float* o = out + (i * np + p) * 16;
            for (int j = 0; j < lanes; ++j) dst[j * kOutRows + i] = o[j];
          }
        }
      }
    }
    for (int64_t b = 0; b < n_batch; ++b) {
      const float* src = gathered.data() + b * kOutRows;
      float* dst = y + b * y_stride + g0;
      if (g_rows == kOutRows) {  // two vector moves, not a (slow-starting) rep movs
        _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
        _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
      } else {
        std::memcpy(dst, src, static_cast<size_t>(g_rows) * sizeof(float));
      }
    }
  }
}

// The 32-element formats' GemmRowsFn.
template <typename Fmt, int MR, int NP, TileFn (*Select)(int, int),
          DecodeGroupFn Decode = DecodeGroup<Fmt, MR>>
void GemmRows(const uint8_t* w, int64_t w_stride, int64_t row_begin, int64_t row_end,
              int64_t n_blocks, const uint8_t* panels, int64_t n_batch, float* y,
              int64_t y_stride) {
  GemmRowsOf<Block32Layout, MR, NP, Select, Decode>(w, w_stride, row_begin, row_end, n_blocks,
                                                     panels, n_batch, y, y_stride);
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_GEMM_X86_H_
