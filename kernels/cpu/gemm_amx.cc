// AMX-INT8 tiled kernels (gemm_kernels.h) for the 32-element block formats: the integer block
// dots of 16 weight rows x 16 activation rows come from one tile multiply per block, and the
// float part (the canonical term and chain sums of dot_kernels.h) runs in AVX-512 as in the
// VNNI kernels, so the results are the same bits as every other path.
//
// Per block slot k of the chain-major order:
//   A (16 rows x 32 bytes) = the 32 signed codes of 16 decoded weight rows (the thread's decode
//                            buffer, DecodedRowBytes apart: loaded in place with that stride)
//   B (8 rows x 64 bytes)  = the panel's block: row g holds bytes 4g..4g+3 of the 16 activation
//                            rows, +128 (unsigned) -- the panel layout is exactly AMX's B layout
//   C (16 x 16 int32)      = A . B (tdpbsud, signed x unsigned) + A . M (tdpbssd, M = all -128)
//                          = per weight row, codes . (a + 128) - 128 sum(codes) = codes . a,
//                            exactly.
// C goes through a small buffer into the AVX-512 epilogue: per weight row r, lanes = activation
// rows, t = ((d_w * d_a) * dot) + off_w * ds added to the chain's accumulator. Two C tiles
// alternate between consecutive blocks so that the next tile multiply overlaps the epilogue.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
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

// The 16 rows' per-block scales laid out block slot by block slot, so that the epilogue finds
// row r's value of slot k at a constant offset from one pointer (a broadcast from memory):
// slot k = d[16] | off[16].
struct SlotScales {
  float d[kRows];
  float off[kRows];
};
thread_local std::vector<SlotScales> slot_scales;

// DecodeGroupFn (gemm_x86.h): each row's codes in chain-major slots as DecodeRow writes them,
// the scales straight into slot_scales (rows past mr get zeros: their outputs are dropped, and
// zero scales keep them finite). No code sums: the tile takes the +128 back itself.
template <typename Fmt, typename Blocks>
void DecodeAmxGroup(const uint8_t* w, int64_t w_stride, int mr, int64_t n_blocks, uint8_t* dec,
                    DecodedRow* rows) {
  static_assert(Fmt::kCodeBias == 0, "the tiles multiply the codes as they are");
  const int64_t dec_bytes = DecodedRowBytes(n_blocks);
  slot_scales.resize(static_cast<size_t>(n_blocks));
  SlotScales* scales = slot_scales.data();
  int64_t start[kSumChains];
  for (int c = 0; c < kSumChains; ++c) start[c] = ChainStart(c, n_blocks);
  for (int r = 0; r < kRows; ++r) {
    uint8_t* codes = dec + r * dec_bytes;
    rows[r] = ViewDecodedRow(codes, n_blocks);
    if (r >= mr) {
      for (int64_t k = 0; k < n_blocks; ++k) scales[k].d[r] = scales[k].off[r] = 0.0f;
      continue;
    }
    const uint8_t* wr = w + r * w_stride;
    Blocks::ForEach(wr, n_blocks, [&](int64_t k, __m256i block_codes, float d, float field) {
      const int64_t slot = start[k % kSumChains] + k / kSumChains;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * slot), block_codes);
      scales[slot].d[r] = d;
      scales[slot].off[r] = Fmt::kOffsetFactor * field;
    });
  }
}

// The canonical terms of block slot k (C of it in c[16 rows][16 lanes]) added to acc.
template <typename Fmt>
inline __attribute__((always_inline)) void AddBlockTerms(const int32_t* c, const SlotScales& s,
                                                         const uint8_t* pb, __m512 acc[kRows]) {
  const __m512 da = _mm512_load_ps(reinterpret_cast<const float*>(pb + 512));
  const __m512 ds = _mm512_load_ps(reinterpret_cast<const float*>(pb + 576));
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    const __m512i dot = _mm512_load_si512(c + 16 * r);
    __m512 t = Ops512::Opaque(
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(s.d[r]), da), Ops512::Cvt(dot)));
    if constexpr (Fmt::kOffsetFactor != 0.0f) {
      t = _mm512_add_ps(t, Ops512::Opaque(_mm512_mul_ps(_mm512_set1_ps(s.off[r]), ds)));
    }
    acc[r] = _mm512_add_ps(acc[r], t);
  }
}

// TileFn (gemm_x86.h) for 16 rows x 1 panel; rows past the real ones give unused outputs.
template <typename Fmt>
void AmxTile(const DecodedRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
  ConfigureTiles();
  const int64_t a_stride = DecodedRowBytes(n_blocks);
  _tile_loadd(6, kMinus128, 64);
  alignas(64) int32_t c0[16 * 16];
  alignas(64) int32_t c1[16 * 16];
  alignas(64) float chains[kSumChains][kRows * 16];
  const SlotScales* scales = slot_scales.data();
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[kRows];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    const int64_t end = ChainStart(c + 1, n_blocks);
    int64_t k = ChainStart(c, n_blocks);
    auto pb = [&](int64_t slot) { return panel[0] + slot * kGemmPanelBlockBytes; };
    for (; k + 1 < end; k += 2) {
      _tile_zero(0);
      _tile_loadd(2, rows[0].codes + 32 * k, a_stride);
      _tile_loadd(4, pb(k), 64);
      _tile_dpbsud(0, 2, 4);
      _tile_dpbssd(0, 2, 6);
      _tile_zero(1);
      _tile_loadd(3, rows[0].codes + 32 * (k + 1), a_stride);
      _tile_loadd(5, pb(k + 1), 64);
      _tile_dpbsud(1, 3, 5);
      _tile_dpbssd(1, 3, 6);
      _tile_stored(0, c0, 64);
      AddBlockTerms<Fmt>(c0, scales[k], pb(k), acc);
      _tile_stored(1, c1, 64);
      AddBlockTerms<Fmt>(c1, scales[k + 1], pb(k + 1), acc);
    }
    if (k < end) {
      _tile_zero(0);
      _tile_loadd(2, rows[0].codes + 32 * k, a_stride);
      _tile_loadd(4, pb(k), 64);
      _tile_dpbsud(0, 2, 4);
      _tile_dpbssd(0, 2, 6);
      _tile_stored(0, c0, 64);
      AddBlockTerms<Fmt>(c0, scales[k], pb(k), acc);
    }
    for (int r = 0; r < kRows; ++r) _mm512_store_ps(chains[c] + 16 * r, acc[r]);
  }
  StoreChainSums<Ops512>(chains[0], kRows * 16, out);
}

template <typename Fmt>
TileFn SelectAmxTile(int /*mr*/, int /*np*/) {
  return AmxTile<Fmt>;
}

template <typename Fmt, typename Blocks = GgufBlocks<Fmt>>
GemmRowsFn Rows() {
  return GemmRows<Fmt, kRows, kPanels, SelectAmxTile<Fmt>, DecodeAmxGroup<Fmt, Blocks>>;
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
