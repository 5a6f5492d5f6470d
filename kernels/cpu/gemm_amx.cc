// AMX-INT8 tiled kernels (gemm_kernels.h) for the 32-element block formats: the integer block
// dots of 16 weight rows x 16 activation rows come from one tile multiply per block, and the
// float part (the canonical term and chain sums of dot_kernels.h) runs in AVX-512 as in the
// VNNI kernels, so the results are the same bits as every other path.
//
// Per block slot k of the chain-major order (block b of the weight rows):
//   A (16 rows x 32 bytes) = block b's 32 signed codes of 16 weight rows: decoded into the
//                            thread's buffer, or for Q8_0 the weights themselves (loaded in
//                            place with the rows' stride)
//   B (8 rows x 64 bytes)  = the panel's block: row g holds bytes 4g..4g+3 of the 16 activation
//                            rows, +128 (unsigned) -- the panel layout is exactly AMX's B layout
//   C (16 x 16 int32)      = A . B (tdpbsud, signed x unsigned) + A . M (tdpbssd, M = all -128)
//                          = per weight row, codes . (a + 128) - 128 sum(codes) = codes . a,
//                            exactly.
// C goes through a small buffer into the AVX-512 epilogue: per weight row r, lanes = activation
// rows, t = ((d_w * d_a) * dot) + off_w * ds added to the chain's accumulator. Two C tiles
// alternate between consecutive blocks so that the next tile multiply overlaps the epilogue.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/block32_avx512vnni.h"
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_ops_avx512vnni.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

constexpr int kRows = 16;  // weight rows per tile: A's rows, C's rows
constexpr int kPanels = 1;

// Tile registers: two accumulators, two A and two B operands (one pair per block in flight),
// and M = a B operand of all -128. GCC's tile intrinsics paste the register number into the
// instruction text, so the calls below spell them as literals: C0 = 0, C1 = 1, A0 = 2,
// A1 = 3, B0 = 4, B1 = 5, M = 6.
enum : int { kC0 = 0, kC1 = 1, kA0 = 2, kA1 = 3, kB0 = 4, kB1 = 5, kM = 6 };

// 8 rows x 64 bytes of 0x80: as tdpbssd's signed operand, -128 in every byte, so
// C += A . M adds -128 * sum(codes) of each weight row's block to all of its lanes.
alignas(64) constexpr uint8_t kMinus128[8 * 64] = {
#define TESSERA_X8(v) v, v, v, v, v, v, v, v
#define TESSERA_X64(v) TESSERA_X8(TESSERA_X8(v))
    TESSERA_X64(0x80), TESSERA_X64(0x80), TESSERA_X64(0x80), TESSERA_X64(0x80),
    TESSERA_X64(0x80), TESSERA_X64(0x80), TESSERA_X64(0x80), TESSERA_X64(0x80)
#undef TESSERA_X64
#undef TESSERA_X8
};

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Loads the tile shapes into this thread's tile configuration (once per thread: nothing else
// in the process configures tiles).
void ConfigureTiles() {
  thread_local bool configured = false;
  if (configured) return;
  TileConfig cfg = {};
  cfg.palette_id = 1;
  for (int c : {kC0, kC1}) {
    cfg.rows[c] = 16;
    cfg.colsb[c] = 64;
  }
  for (int a : {kA0, kA1}) {
    cfg.rows[a] = kRows;
    cfg.colsb[a] = 32;
  }
  for (int b : {kB0, kB1, kM}) {
    cfg.rows[b] = 8;
    cfg.colsb[b] = 64;
  }
  // Not _tile_loadconfig: GCC 12's macro names only the first 8 bytes of the configuration as
  // the asm's input, so the compiler may drop the stores to the rest; this operand is all 64.
  __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
  configured = true;
}

// A group's decoded rows, as AmxTile reads them: rows[r].codes = block 0's 32 codes of row r,
// block b's at + kBlockStride * b (block order, not the panels' chain-major slots), rows
// rows[1].codes - rows[0].codes bytes apart; rows[r].d / rows[r].off = per-block floats of row
// r (block order; zeros for rows past the real ones, whose outputs are dropped). No code sums:
// the tile takes the +128 back itself, so rows[r].bias is unused.
//
// The codes are either decoded into the thread's buffer (4-bit and 5-bit formats: 32 bytes a
// block) or, for Q8_0, read in place from the weights (34 bytes a block, the int8 values after
// the fp16 d), which leaves the decoder nothing to do but the scales.
thread_local std::vector<float> row_scales;  // row r: d[n_blocks] | off[n_blocks]

// Points rows[r].d / .off into row_scales; rows from mr on get zeros.
inline float* RowScales(int mr, int64_t n_blocks, DecodedRow* rows) {
  row_scales.resize(static_cast<size_t>(2 * kRows * n_blocks));
  float* base = row_scales.data();
  for (int r = 0; r < kRows; ++r) {
    rows[r].d = base + 2 * r * n_blocks;
    rows[r].off = base + (2 * r + 1) * n_blocks;
    rows[r].bias = nullptr;
  }
  std::fill(base + 2 * mr * n_blocks, base + 2 * kRows * n_blocks, 0.0f);
  return base;
}

// Bytes from one block's codes to the next in a decoded (or in-place) row.
template <typename Fmt, typename Blocks>
constexpr int64_t kBlockStride = 32;
template <>
constexpr int64_t kBlockStride<Q8_0Signed, GgufBlocks<Q8_0Signed>> = sizeof(BlockQ8_0);

// One row through a block visitor (gemm_x86.h): codes to out[32 b], scales to d[b] / off[b].
template <typename Fmt, typename Blocks>
void DecodeAmxRow(const uint8_t* wr, int64_t n_blocks, uint8_t* out, float* d, float* off) {
  Blocks::ForEach(wr, n_blocks, [&](int64_t k, __m256i block_codes, float dk, float field) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * k), block_codes);
    d[k] = dk;
    off[k] = Fmt::kOffsetFactor * field;
  });
}

// An interleaved row (kernels/quant/interleave.h), a group of eight blocks at a time: each
// 64-byte chunk's low nibbles are blocks 4c and 4c + 1 in element order, its high nibbles
// blocks 4c + 2 and 4c + 3, so two 512-bit stores put four blocks' codes in block order; the
// eight d (and m) are one fp16 vector. The tail goes through InterleavedBlocks.
template <typename Fmt>
void DecodeAmxInterleavedRow(const uint8_t* wr, int64_t n_blocks, uint8_t* out, float* d,
                             float* off) {
  constexpr int64_t kGroupBytes = kInterleaveBlocks * Fmt::kBytes;
  const __m512i low = _mm512_set1_epi8(0x0F);
  const int64_t n_groups = n_blocks / kInterleaveBlocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    const uint8_t* grp = wr + g * kGroupBytes;
    uint8_t* codes = out + 32 * kInterleaveBlocks * g;
    for (int c = 0; c < 2; ++c) {
      const __m512i v = _mm512_loadu_si512(grp + 64 * c);
      _mm512_storeu_si512(codes + 128 * c, _mm512_and_si512(v, low));
      _mm512_storeu_si512(codes + 128 * c + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
    }
    const auto fp16 = [&](int field) {
      return _mm256_cvtph_ps(_mm_loadu_si128(
          reinterpret_cast<const __m128i*>(grp + kInterleavedCodeBytes + 8 * field)));
    };
    _mm256_storeu_ps(d + kInterleaveBlocks * g, fp16(0));
    _mm256_storeu_ps(off + kInterleaveBlocks * g,
                     _mm256_mul_ps(_mm256_set1_ps(Fmt::kOffsetFactor), fp16(Fmt::kOffsetField)));
  }
  const int64_t k0 = kInterleaveBlocks * n_groups;
  if (k0 == n_blocks) return;
  // InterleavedBlocks visits the tail only once n_groups is 0 past the groups: hand it the
  // tail alone (its layout does not depend on what precedes it).
  DecodeAmxRow<Fmt, InterleavedBlocks<Fmt>>(wr + n_groups * kGroupBytes, n_blocks - k0,
                                            out + 32 * k0, d + k0, off + k0);
}

// DecodeGroupFn (gemm_x86.h) into the layout above.
template <typename Fmt, typename Blocks>
void DecodeAmxGroup(const uint8_t* w, int64_t w_stride, int mr, int next_rows, int64_t n_blocks,
                    uint8_t* dec, DecodedRow* rows) {
  static_assert(Fmt::kCodeBias == 0, "the tiles multiply the codes as they are");
  constexpr bool kInPlace = kBlockStride<Fmt, Blocks> != 32;
  const int64_t dec_bytes =
      kInPlace ? (n_blocks * kBlockStride<Fmt, Blocks> + 63) / 64 * 64 : DecodedRowBytes(n_blocks);
  float* scales = RowScales(mr, n_blocks, rows);
  for (int r = 0; r < kRows; ++r) {
    PrefetchNextRow<kRows>(w, w_stride, r, next_rows);
    uint8_t* codes = dec + r * dec_bytes;
    rows[r].codes = reinterpret_cast<const int8_t*>(codes);
    if (r >= mr) continue;
    const uint8_t* wr = w + r * w_stride;
    float* d = scales + 2 * r * n_blocks;
    float* off = d + n_blocks;
    if constexpr (kInPlace) {
      // Q8_0: d only; the codes stay where they are, unless this is an edge group, whose
      // missing rows would have the tile read past the matrix: then the real rows are copied.
      for (int64_t k = 0; k < n_blocks; ++k) {
        d[k] = LoadFp16(wr + k * sizeof(BlockQ8_0));
        off[k] = 0.0f;
      }
      if (mr == kRows) {
        rows[r].codes = reinterpret_cast<const int8_t*>(wr + offsetof(BlockQ8_0, qs));
      } else {
        std::memcpy(codes, wr, static_cast<size_t>(n_blocks) * sizeof(BlockQ8_0));
        rows[r].codes = reinterpret_cast<const int8_t*>(codes + offsetof(BlockQ8_0, qs));
      }
    } else if constexpr (std::is_same_v<Blocks, InterleavedBlocks<Fmt>>) {
      DecodeAmxInterleavedRow<Fmt>(wr, n_blocks, codes, d, off);
    } else {
      DecodeAmxRow<Fmt, Blocks>(wr, n_blocks, codes, d, off);
    }
  }
  if (kInPlace && mr < kRows) {
    for (int r = mr; r < kRows; ++r) {
      rows[r].codes =
          reinterpret_cast<const int8_t*>(dec + r * dec_bytes + offsetof(BlockQ8_0, qs));
    }
  }
}

// The canonical terms of block b (C of it in c[16 rows][16 lanes]) added to acc; the panel's
// block pb holds the activation scales.
template <typename Fmt>
inline __attribute__((always_inline)) void AddBlockTerms(const int32_t* c, const DecodedRow* rows,
                                                         int64_t b, const uint8_t* pb,
                                                         __m512 acc[kRows]) {
  const __m512 da = _mm512_load_ps(reinterpret_cast<const float*>(pb + 512));
  const __m512 ds = _mm512_load_ps(reinterpret_cast<const float*>(pb + 576));
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    const __m512i dot = _mm512_load_si512(c + 16 * r);
    __m512 t = Ops512::Opaque(
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(rows[r].d[b]), da), Ops512::Cvt(dot)));
    if constexpr (Fmt::kOffsetFactor != 0.0f) {
      t = _mm512_add_ps(t, Ops512::Opaque(_mm512_mul_ps(_mm512_set1_ps(rows[r].off[b]), ds)));
    }
    acc[r] = _mm512_add_ps(acc[r], t);
  }
}

// TileFn (gemm_x86.h) for 16 rows x 1 panel; rows past the real ones give unused outputs.
// Chain c's slots k = ChainStart(c) + j hold block b = c + 8 j (gemm_kernels.h).
template <typename Fmt, int64_t kStride>
void AmxTile(const DecodedRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
  ConfigureTiles();
  const int64_t a_stride = rows[1].codes - rows[0].codes;
  _tile_loadd(6, kMinus128, 64);
  alignas(64) int32_t c0[16 * 16];
  alignas(64) int32_t c1[16 * 16];
  alignas(64) float chains[kSumChains][kRows * 16];
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[kRows];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    const int64_t begin = ChainStart(c, n_blocks), end = ChainStart(c + 1, n_blocks);
    auto pb = [&](int64_t slot) { return panel[0] + slot * kGemmPanelBlockBytes; };
    auto block = [&](int64_t slot) { return c + kSumChains * (slot - begin); };
    auto codes = [&](int64_t slot) { return rows[0].codes + kStride * block(slot); };
    int64_t k = begin;
    for (; k + 1 < end; k += 2) {
      _tile_zero(0);
      _tile_loadd(2, codes(k), a_stride);
      _tile_loadd(4, pb(k), 64);
      _tile_dpbsud(0, 2, 4);
      _tile_dpbssd(0, 2, 6);
      _tile_zero(1);
      _tile_loadd(3, codes(k + 1), a_stride);
      _tile_loadd(5, pb(k + 1), 64);
      _tile_dpbsud(1, 3, 5);
      _tile_dpbssd(1, 3, 6);
      _tile_stored(0, c0, 64);
      AddBlockTerms<Fmt>(c0, rows, block(k), pb(k), acc);
      _tile_stored(1, c1, 64);
      AddBlockTerms<Fmt>(c1, rows, block(k + 1), pb(k + 1), acc);
    }
    if (k < end) {
      _tile_zero(0);
      _tile_loadd(2, codes(k), a_stride);
      _tile_loadd(4, pb(k), 64);
      _tile_dpbsud(0, 2, 4);
      _tile_dpbssd(0, 2, 6);
      _tile_stored(0, c0, 64);
      AddBlockTerms<Fmt>(c0, rows, block(k), pb(k), acc);
    }
    for (int r = 0; r < kRows; ++r) _mm512_store_ps(chains[c] + 16 * r, acc[r]);
  }
  StoreChainSums<Ops512>(chains[0], kRows * 16, out);
}

template <typename Fmt, int64_t kStride>
TileFn SelectAmxTile(int /*mr*/, int /*np*/) {
  return AmxTile<Fmt, kStride>;
}

template <typename Fmt, typename Blocks = GgufBlocks<Fmt>>
GemmRowsFn Rows() {
  return GemmRows<Fmt, kRows, kPanels, SelectAmxTile<Fmt, kBlockStride<Fmt, Blocks>>,
                  DecodeAmxGroup<Fmt, Blocks>>;
}

}  // namespace

GemmRowsFn AmxGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return Rows<Q4_0>();
    case GgmlType::kQ4_1:
      return Rows<Q4_1>();
    case GgmlType::kQ5_0:
      return Rows<Q5_0>();
    case GgmlType::kQ5_1:
      return Rows<Q5_1>();
    case GgmlType::kQ8_0:
      return Rows<Q8_0Signed>();
    default:
      return nullptr;
  }
}

GemmRowsFn AmxInterleavedGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return Rows<Q4_0, InterleavedBlocks<Q4_0>>();
    case GgmlType::kQ4_1:
      return Rows<Q4_1, InterleavedBlocks<Q4_1>>();
    default:
      return nullptr;
  }
}

}  // namespace tessera
