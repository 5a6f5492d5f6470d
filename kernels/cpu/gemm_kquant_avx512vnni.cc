// AVX-512 VNNI tiled kernels (gemm_kernels.h) for the k-quants (Q2_K..Q6_K): prefill and large
// decode batches of the Q4_K_M / Q5_K_M / Q6_K models, on the k-quant panels (16 activation
// rows per 512-bit vector, as the 32-element formats' tiles).
//
// Weight rows are decoded by the portable k-quant decoder (kquant_decode.h) once per call into
// the thread's buffer: per super-block the 256 codes (offsets already applied, signed), the 16
// integer sub-block scales, the mins as int16 pairs, and -128 * sum_j sc_j * sum(codes of j),
// which takes back the panels' +128 exactly. Per tile (4 weight rows x 2 panels), per
// super-block and lane (activation row):
//   sumi = bias + sum_j sc_j * (sum over sub-block j of codes x (a + 128))  (vpdpbusd, vpmulld)
//   summ = sum_j m_j * bsum_j                                               (vpdpwssd)
//   t    = fl(fl(d * d_a) * float(sumi)) - fl(fl(dmin * d_a) * float(summ))
// which is the canonical term of dot_kernels.h; the terms are summed in its chain order, so the
// results equal the row-dot kernels' bit for bit.
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/kquant_decode.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {

constexpr int kRows = 4, kPanels = 2;

// One decoded weight row, arrays per super-block slot (chain-major order):
// codes[256 n] int8 | sc[16 n] int32 | mpairs[8 n] int32 (m_2i | m_2i+1 << 16) | bias[n] int32
// | d[n] float | dmin[n] float.
struct KRow {
  const int8_t* codes;
  const int32_t* sc;
  const int32_t* mpairs;
  const int32_t* bias;
  const float* d;
  const float* dmin;
};

struct KLayout {
  using Row = KRow;
  static int64_t RowBytes(int64_t n_blocks) {
    return (n_blocks * (256 + 64 + 32 + 4 + 4 + 4) + 63) / 64 * 64;
  }
  static constexpr int64_t kPanelBlockBytes = kKGemmPanelBlockBytes;
};

KRow ViewKRow(uint8_t* p, int64_t n) {
  return {reinterpret_cast<const int8_t*>(p), reinterpret_cast<const int32_t*>(p + 256 * n),
          reinterpret_cast<const int32_t*>(p + 320 * n),
          reinterpret_cast<const int32_t*>(p + 352 * n),
          reinterpret_cast<const float*>(p + 356 * n),
          reinterpret_cast<const float*>(p + 360 * n)};
}

// DecodeGroupFnFor<KRow> (gemm_x86.h).
template <GgmlType kType>
void DecodeKGroup(const uint8_t* w, int64_t w_stride, int mr, int64_t n_blocks, uint8_t* dec,
                  KRow* rows) {
  static const KDecodeFn decode = FindKDecoder(kType);
  const int64_t block_bytes = FindQuantTraits(kType)->block_bytes;
  const int64_t row_bytes = KLayout::RowBytes(n_blocks);
  KDecoded k;
  for (int r = 0; r < kRows; ++r) {
    uint8_t* out = dec + r * row_bytes;
    rows[r] = ViewKRow(out, n_blocks);
    if (r >= mr) continue;
    auto* sc = reinterpret_cast<int32_t*>(out + 256 * n_blocks);
    auto* mpairs = reinterpret_cast<int32_t*>(out + 320 * n_blocks);
    auto* bias = reinterpret_cast<int32_t*>(out + 352 * n_blocks);
    auto* d = reinterpret_cast<float*>(out + 356 * n_blocks);
    auto* dmin = reinterpret_cast<float*>(out + 360 * n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) {
      decode(w + r * w_stride + b * block_bytes, &k);
      const int64_t s = ChainSlot(b, n_blocks);
      std::memcpy(out + 256 * s, k.q, 256);
      int32_t correction = 0;
      for (int j = 0; j < 16; ++j) {
        int32_t sum = 0;
        for (int i = 0; i < 16; ++i) sum += k.q[16 * j + i];
        correction += k.sc[j] * sum;
        sc[16 * s + j] = k.sc[j];
      }
      for (int i = 0; i < 8; ++i) {
        mpairs[8 * s + i] = static_cast<int32_t>(static_cast<uint32_t>(k.m[2 * i] & 0xFFFF) |
                                                 (static_cast<uint32_t>(k.m[2 * i + 1]) << 16));
      }
      bias[s] = -128 * correction;
      d[s] = k.d;
      dmin[s] = k.dmin;
    }
  }
}

// GCC may fuse a product into a following add or subtract; an empty asm makes the product an
// opaque rounded value (as the other tiles do).
inline __m512 Opaque(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

inline __m512i Bcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// One MR x (16 NP) tile over all super-blocks, chain by chain (canonical order).
template <bool kMins, int MR, int NP>
void KTile(const KRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
  constexpr int kTileFloats = MR * NP * 16;
  alignas(64) float chains[kSumChains][kTileFloats];
  for (int c = 0; c < kSumChains; ++c) {
    __m512 acc[MR][NP];
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
    const int64_t end = ChainStart(c + 1, n_blocks);
    for (int64_t k = ChainStart(c, n_blocks); k < end; ++k) {
      const uint8_t* pb[NP];
      for (int p = 0; p < NP; ++p) pb[p] = panel[p] + k * kKGemmPanelBlockBytes;
      __m512i sumi[MR][NP];
      for (int r = 0; r < MR; ++r)
        for (int p = 0; p < NP; ++p) sumi[r][p] = _mm512_set1_epi32(rows[r].bias[k]);
      for (int j = 0; j < 16; ++j) {  // sub-blocks of 16 elements: 4 groups of 4
        __m512i s[MR][NP];
        for (int r = 0; r < MR; ++r)
          for (int p = 0; p < NP; ++p) s[r][p] = _mm512_setzero_si512();
        for (int g = 4 * j; g < 4 * j + 4; ++g) {
          __m512i a[NP];
          for (int p = 0; p < NP; ++p) a[p] = _mm512_load_si512(pb[p] + 64 * g);
          for (int r = 0; r < MR; ++r) {
            const __m512i wv = Bcast32(rows[r].codes + 256 * k + 4 * g);
            for (int p = 0; p < NP; ++p) s[r][p] = _mm512_dpbusd_epi32(s[r][p], a[p], wv);
          }
        }
        for (int r = 0; r < MR; ++r) {
          const __m512i sc = _mm512_set1_epi32(rows[r].sc[16 * k + j]);
          for (int p = 0; p < NP; ++p) {
            sumi[r][p] = _mm512_add_epi32(sumi[r][p], _mm512_mullo_epi32(s[r][p], sc));
          }
        }
      }
      __m512i summ[MR][NP];
      if constexpr (kMins) {
        for (int r = 0; r < MR; ++r)
          for (int p = 0; p < NP; ++p) summ[r][p] = _mm512_setzero_si512();
        for (int i = 0; i < 8; ++i) {
          __m512i bs[NP];
          for (int p = 0; p < NP; ++p) bs[p] = _mm512_load_si512(pb[p] + 4160 + 64 * i);
          for (int r = 0; r < MR; ++r) {
            const __m512i mp = _mm512_set1_epi32(rows[r].mpairs[8 * k + i]);
            for (int p = 0; p < NP; ++p) summ[r][p] = _mm512_dpwssd_epi32(summ[r][p], bs[p], mp);
          }
        }
      }
      for (int p = 0; p < NP; ++p) {
        const __m512 da = _mm512_load_ps(reinterpret_cast<const float*>(pb[p] + 4096));
        for (int r = 0; r < MR; ++r) {
          __m512 t = Opaque(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(rows[r].d[k]), da),
                                          _mm512_maskz_cvtepi32_ps(0xFFFF, sumi[r][p])));
          if constexpr (kMins) {
            const __m512 m = Opaque(_mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(rows[r].dmin[k]), da),
                _mm512_maskz_cvtepi32_ps(0xFFFF, summ[r][p])));
            t = _mm512_sub_ps(t, m);
          }
          acc[r][p] = _mm512_add_ps(acc[r][p], t);
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NP; ++p) _mm512_store_ps(chains[c] + (r * NP + p) * 16, acc[r][p]);
  }
  for (int i = 0; i < kTileFloats; i += 16) {
    auto at = [&](int c) { return _mm512_load_ps(chains[c] + i); };
    const __m512 sum =
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(at(0), at(4)), _mm512_add_ps(at(2), at(6))),
                      _mm512_add_ps(_mm512_add_ps(at(1), at(5)), _mm512_add_ps(at(3), at(7))));
    _mm512_store_ps(out + i, sum);
  }
}

template <bool kMins, int MR, int NP>
TileFnFor<KRow> SelectKTile(int mr, int np) {
  if constexpr (MR > 1) {
    if (mr < MR) return SelectKTile<kMins, MR - 1, NP>(mr, np);
  }
  if constexpr (NP > 1) {
    if (np < NP) return SelectKTile<kMins, MR, NP - 1>(mr, np);
  }
  return KTile<kMins, MR, NP>;
}

template <GgmlType kType, bool kMins>
GemmRowsFn Rows() {
  return GemmRowsOf<KLayout, kRows, kPanels, SelectKTile<kMins, kRows, kPanels>,
                    DecodeKGroup<kType>>;
}

}  // namespace

GemmRowsFn Avx512VnniKGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return Rows<GgmlType::kQ2_K, true>();
    case GgmlType::kQ3_K:
      return Rows<GgmlType::kQ3_K, false>();
    case GgmlType::kQ4_K:
      return Rows<GgmlType::kQ4_K, true>();
    case GgmlType::kQ5_K:
      return Rows<GgmlType::kQ5_K, true>();
    case GgmlType::kQ6_K:
      return Rows<GgmlType::kQ6_K, false>();
    default:
      return nullptr;
  }
}

}  // namespace tessera
