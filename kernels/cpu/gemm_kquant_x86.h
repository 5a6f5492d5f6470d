// The tiled GEMM for the k-quants (Q2_K..Q6_K), shared by the instruction-set files
// (gemm_avx512vnni.cc, gemm_avx2.cc), which instantiate it with their vector operations: prefill
// and large decode batches of the Q4_K_M / Q5_K_M / Q6_K models, on the k-quant panels
// (gemm_kernels.h). Internal linkage on purpose, like gemm_x86.h.
//
// Weight rows are decoded by the portable k-quant decoder (kquant_decode.h) once per call into
// the thread's buffer: per super-block the 256 codes (offsets already applied, signed), the 16
// integer sub-block scales, the mins as int16 pairs, and -128 * sum_j sc_j * sum(codes of j),
// which takes back the panels' +128 exactly. Per tile, per super-block and lane (activation
// row):
//   sumi = bias + sum_j sc_j * (sum over sub-block j of codes x (a + 128))
//   summ = sum_j m_j * bsum_j
//   t    = fl(fl(d * d_a) * float(sumi)) - fl(fl(dmin * d_a) * float(summ))
// which is the canonical term of dot_kernels.h (the integers are exact, so they equal the
// row-dot kernels'); the terms are summed in its chain order, so the results equal the row-dot
// kernels' bit for bit. Every code fits a signed byte (Q6_K's -32..31 is the widest), so the
// AVX2 vpmaddubsw pairs cannot saturate (2 * 255 * 32 < 32767).
#ifndef TESSERA_KERNELS_CPU_GEMM_KQUANT_X86_H_
#define TESSERA_KERNELS_CPU_GEMM_KQUANT_X86_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_x86.h"
#include "kernels/cpu/kquant_decode.h"
#include "kernels/cpu/kquants_x86.h"
#include "kernels/cpu/simd_x86.h"

namespace tessera {
namespace {  // NOLINT(build/namespaces): see simd_x86.h

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

// The sum of each 16-byte half of 32 unsigned bytes.
inline void HalfSums(__m256i v, int32_t* lo, int32_t* hi) {
  const __m256i sad = _mm256_sad_epu8(v, _mm256_setzero_si256());  // 4 sums of 8 bytes
  const __m128i a = _mm256_castsi256_si128(sad), b = _mm256_extracti128_si256(sad, 1);
  *lo = static_cast<int32_t>(_mm_cvtsi128_si64(a) + _mm_extract_epi64(a, 1));
  *hi = static_cast<int32_t>(_mm_cvtsi128_si64(b) + _mm_extract_epi64(b, 1));
}

// acc + sum_i u_i * s_i over 32 unsigned bytes u (< 128) with s_i byte j0 of scales_twice for
// bytes 0..15 and byte j1 for bytes 16..31 (int8 scales, the same 16 in both 128-bit halves),
// as int32 lanes; exact (a pair of products is at most 2 * 127 * 128 < 2^15). One vpdpbusd
// where the including file has AVX-512 VNNI, else vpmaddubsw + vpmaddwd + vpaddd.
inline __m256i AddScaledSums(__m256i acc, __m256i u, __m256i scales_twice, int j0, int j1) {
  const __m256i pick = _mm256_set_m128i(_mm_set1_epi8(static_cast<char>(j1)),
                                        _mm_set1_epi8(static_cast<char>(j0)));
  const __m256i sc = _mm256_shuffle_epi8(scales_twice, pick);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, sc);
#else
  return _mm256_add_epi32(acc,
                          _mm256_madd_epi16(_mm256_maddubs_epi16(u, sc), _mm256_set1_epi16(1)));
#endif
}

// One Q4_K or Q5_K super-block the way DecodeKGroup lays it out, with AVX2 instead of the
// portable decoder (the same codes, scales, mins and correction; Q4_K is most of a Q4_K_M
// model, Q5_K of a Q5_K_M one). Element 64 p + l is the low nibble of qs[32 p + l], element
// 64 p + 32 + l its high nibble (l < 32); Q5_K adds bit 2 p (2 p + 1) of qh[l] as their bit 4.
// 32-element sub-block j has scale and min j (ScaleMinK4), repeated for both 16-element halves.
template <bool kFiveBits>
inline void DecodeQ45KBlock(const uint8_t* blk, uint8_t* codes, int32_t* sc, int32_t* mpairs,
                            int32_t* bias, float* d, float* dmin) {
  const uint8_t* qs = blk + (kFiveBits ? 48 : 16);
  const __m256i nibble = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256i qh = _mm256_setzero_si256();
  if constexpr (kFiveBits) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
  // The eight scales and mins at once (kquants_x86.h; scales after d, dmin): bytes 0..7 sc_j,
  // 8..15 m_j. sc per 16-element half (sc_j twice), mpairs[j] = m_j | m_j << 16.
  const __m128i scmin = ScalesMinsK4(blk + 4);
  const __m128i sc_twice =
      _mm_shuffle_epi8(scmin, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc), _mm256_cvtepu8_epi32(sc_twice));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc + 8),
                      _mm256_cvtepu8_epi32(_mm_srli_si128(sc_twice, 8)));
  const __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(scmin, 8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(mpairs),
                      _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16)));
  const __m256i sc8 = _mm256_broadcastsi128_si256(scmin);  // sc_j (< 64) at byte j
  __m256i corr = _mm256_setzero_si256();  // lanes of sum_j sc_j * (sum of sub-block j's codes)
  for (int p = 0; p < 4; ++p) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * p));
    __m256i half[2] = {_mm256_and_si256(q, nibble),
                       _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble)};
    if constexpr (kFiveBits) {
      // Bit k of each qh byte: a 16-bit shift by k then a byte mask (bits shifted in from the
      // neighbouring byte land above bit 0 and are masked off).
      for (int e = 0; e < 2; ++e) {
        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + e), one);
        half[e] = _mm256_or_si256(half[e], _mm256_slli_epi16(bit, 4));
      }
    }
    for (int e = 0; e < 2; ++e) {
      const int j = 2 * p + e;  // 32-element sub-block
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * j), half[e]);
      corr = AddScaledSums(corr, half[e], sc8, j, j);
    }
  }
  *bias = -128 * HorizontalSumI32(corr);
  *d = LoadFp16(blk);
  *dmin = LoadFp16(blk + 2);
}

// The same for Q2_K and Q3_K (kquant_decode.cc's DecodeQ2_K / DecodeQ3_K): per 128-element
// half h, bits 2s..2s+1 of qs[32 h + l] are element 128 h + 32 s + l (l < 32); Q3_K adds bit
// 4 h + s of hmask[l], a clear bit meaning minus 4. Sub-blocks of 16: Q2_K's scales[j] = sc |
// m << 4; Q3_K's 6-bit scales (offset 32) as ScalesQ3_K unpacks them, no mins.
template <bool kThreeBits>
inline void DecodeQ23KBlock(const uint8_t* blk, uint8_t* codes, int32_t* sc, int32_t* mpairs,
                            int32_t* bias, float* d, float* dmin) {
  const uint8_t* qs = blk + (kThreeBits ? 32 : 16);  // BlockQ3_K: hmask first; Q2_K: scales
  const __m256i two_bits = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256i hmask = _mm256_setzero_si256();
  if constexpr (kThreeBits) hmask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
  // The 16 sub-block scales as int8: Q3_K's unpacked (offset 32 taken off), Q2_K's low nibbles.
  const __m128i scales = kThreeBits ? ScalesQ3_K(blk + 96)
                                    : _mm_and_si128(Load128(blk), _mm_set1_epi8(0x0F));
  const __m256i scales_twice = _mm256_broadcastsi128_si256(scales);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc), _mm256_cvtepi8_epi32(scales));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc + 8),
                      _mm256_cvtepi8_epi32(_mm_srli_si128(scales, 8)));
  // Q2_K: mpairs[i] = m_2i | m_2i+1 << 16 is the int16 sequence m_0, m_1, ... (high nibbles).
  const __m128i mins = _mm_and_si128(_mm_srli_epi16(Load128(blk), 4), _mm_set1_epi8(0x0F));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(mpairs),
                      kThreeBits ? _mm256_setzero_si256() : _mm256_cvtepu8_epi16(mins));
  __m256i corr = _mm256_setzero_si256();  // sum_j sc_j * (sum of sub-block j's u)
  for (int h = 0; h < 2; ++h) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * h));
    for (int k = 0; k < 4; ++k) {
      // 16-bit shifts then byte masks: bits shifted in from the neighbouring byte are masked.
      __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), two_bits);  // 0..3
      if constexpr (kThreeBits) {
        const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hmask, 4 * h + k), one);
        u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 2));  // code + 4, 0..7
      }
      const __m256i c = kThreeBits ? _mm256_sub_epi8(u, _mm256_set1_epi8(4)) : u;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 128 * h + 32 * k), c);
      const int j = 8 * h + 2 * k;  // 16-element sub-blocks j, j + 1
      corr = AddScaledSums(corr, u, scales_twice, j, j + 1);
    }
  }
  int32_t correction = HorizontalSumI32(corr);
  if constexpr (kThreeBits) {  // the codes are u - 4: take 4 * 16 * sc_j back per sub-block
    for (int j = 0; j < 16; ++j) correction -= 4 * 16 * sc[j];
  }
  *bias = -128 * correction;
  *d = LoadFp16(blk + (kThreeBits ? 108 : 80));
  *dmin = kThreeBits ? 0.0f : LoadFp16(blk + 82);
}

// The same for Q6_K (kquant_decode.cc's DecodeQ6_K): per 128-element half h and l < 32, the
// low nibbles of ql[64 h + l] and ql[64 h + 32 + l] are elements 128 h + l and + 32, their high
// nibbles + 64 and + 96, with bits 0-1, 2-3, 4-5, 6-7 of qh[32 h + l] on top; codes - 32;
// int8 scales per 16 elements; no mins.
inline void DecodeQ6KBlock(const uint8_t* blk, uint8_t* codes, int32_t* sc, int32_t* mpairs,
                           int32_t* bias, float* d, float* dmin) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  auto bits = [](__m256i v, int mask) { return _mm256_and_si256(v, _mm256_set1_epi8(mask)); };
  const __m128i sc16 = Load128(scales);
  const __m256i scales_twice = _mm256_broadcastsi128_si256(sc16);
  const __m256i sc_lo = _mm256_cvtepi8_epi32(sc16);
  const __m256i sc_hi = _mm256_cvtepi8_epi32(_mm_srli_si128(sc16, 8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc), sc_lo);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc + 8), sc_hi);
  // sum_j sc_j * (sum of sub-block j's codes + 32), less 16 * 32 * sc_j per sub-block (the
  // codes are e - 32).
  __m256i corr = _mm256_mullo_epi32(_mm256_add_epi32(sc_lo, sc_hi), _mm256_set1_epi32(-16 * 32));
  for (int h = 0; h < 2; ++h) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * h));
    // 16-bit shifts move no bits across bytes here: each value is masked to its byte first.
    const __m256i e[4] = {
        _mm256_or_si256(_mm256_and_si256(a, nibble), _mm256_slli_epi16(bits(hb, 0x03), 4)),
        _mm256_or_si256(_mm256_and_si256(b, nibble), _mm256_slli_epi16(bits(hb, 0x0C), 2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), nibble), bits(hb, 0x30)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nibble),
                        _mm256_srli_epi16(bits(hb, 0xC0), 2))};
    for (int q = 0; q < 4; ++q) {
      const int j = 8 * h + 2 * q;  // 16-element sub-blocks j, j + 1
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 128 * h + 32 * q),
                          _mm256_sub_epi8(e[q], _mm256_set1_epi8(32)));
      corr = AddScaledSums(corr, e[q], scales_twice, j, j + 1);
    }
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(mpairs), _mm256_setzero_si256());
  *bias = -128 * HorizontalSumI32(corr);
  *d = LoadFp16(blk + 208);
  *dmin = 0.0f;
}

// DecodeGroupFnFor<KRow> (gemm_x86.h).
template <GgmlType kType, int MR>
void DecodeKGroup(const uint8_t* w, int64_t w_stride, int mr, int next_rows, int64_t n_blocks,
                  uint8_t* dec, KRow* rows) {
  static const KDecodeFn decode = FindKDecoder(kType);
  const int64_t block_bytes = FindQuantTraits(kType)->block_bytes;
  const int64_t row_bytes = KLayout::RowBytes(n_blocks);
  KDecoded k;
  for (int r = 0; r < MR; ++r) {
    uint8_t* out = dec + r * row_bytes;
    rows[r] = ViewKRow(out, n_blocks);
    RowPrefetcher prefetch = NextRowPrefetcher<MR>(w, w_stride, r, next_rows);
    if (r >= mr) {
      prefetch.Finish();
      continue;
    }
    auto* sc = reinterpret_cast<int32_t*>(out + 256 * n_blocks);
    auto* mpairs = reinterpret_cast<int32_t*>(out + 320 * n_blocks);
    auto* bias = reinterpret_cast<int32_t*>(out + 352 * n_blocks);
    auto* d = reinterpret_cast<float*>(out + 356 * n_blocks);
    auto* dmin = reinterpret_cast<float*>(out + 360 * n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t s = ChainSlot(b, n_blocks);
      prefetch.UpTo((b + 1) * block_bytes);
      if constexpr (kType == GgmlType::kQ4_K || kType == GgmlType::kQ5_K) {
        DecodeQ45KBlock<kType == GgmlType::kQ5_K>(w + r * w_stride + b * block_bytes,
                                                  out + 256 * s, sc + 16 * s, mpairs + 8 * s,
                                                  bias + s, d + s, dmin + s);
        continue;
      }
      if constexpr (kType == GgmlType::kQ2_K || kType == GgmlType::kQ3_K) {
        DecodeQ23KBlock<kType == GgmlType::kQ3_K>(w + r * w_stride + b * block_bytes,
                                                  out + 256 * s, sc + 16 * s, mpairs + 8 * s,
                                                  bias + s, d + s, dmin + s);
        continue;
      }
      if constexpr (kType == GgmlType::kQ6_K) {
        DecodeQ6KBlock(w + r * w_stride + b * block_bytes, out + 256 * s, sc + 16 * s,
                       mpairs + 8 * s, bias + s, d + s, dmin + s);
        continue;
      }
      decode(w + r * w_stride + b * block_bytes, &k);
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
    prefetch.Finish();
  }
}

// One MR x (16 NP) tile over all super-blocks, chain by chain (canonical order). Ops: one
// instruction set's vectors as in gemm_x86.h, plus AddI, MulLoI (exact int32 products) and
// DotPairs(acc, a, b) (acc + per-lane sum of the two int16 x int16 products, exact).
// kSub: elements per sub-block scale (32 for Q4_K / Q5_K, whose sc array holds each scale
// twice; 16 for the others), so the scale multiplies once per sub-block. Each sub-block's
// products go into two accumulators (even and odd groups of 4) when the tile has fewer than 8
// chains of them, so that the dot products' latency overlaps. All of it is integer arithmetic
// that cannot overflow (|sum| < 2^31), so the order does not change a bit.
template <typename Ops, bool kMins, int kSub, int MR, int NP>
void KTile(const KRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
  using I = typename Ops::I;
  using F = typename Ops::F;
  constexpr int V = Ops::kVecs;
  constexpr int kLaneBytes = 64 / V;  // bytes of one vector of one 64-byte panel row
  constexpr int kTileFloats = MR * NP * 16;
  constexpr int kGroups = kSub / 4;                // groups of 4 elements per sub-block
  constexpr int kSplit = MR * NP * V < 8 ? 2 : 1;  // accumulators per sub-block
  alignas(64) float chains[kSumChains][kTileFloats];
  for (int c = 0; c < kSumChains; ++c) {
    F acc[MR][NP][V];
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NP; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = Ops::ZeroF();
    const int64_t end = ChainStart(c + 1, n_blocks);
    for (int64_t k = ChainStart(c, n_blocks); k < end; ++k) {
      const uint8_t* pb[NP];
      for (int p = 0; p < NP; ++p) pb[p] = panel[p] + k * kKGemmPanelBlockBytes;
      const int8_t* codes[MR];
      for (int r = 0; r < MR; ++r) codes[r] = rows[r].codes + 256 * k;
      I sumi[MR][NP][V];
      for (int r = 0; r < MR; ++r) {
        const I bias = Ops::SetI(rows[r].bias[k]);
        for (int p = 0; p < NP; ++p)
          for (int v = 0; v < V; ++v) sumi[r][p][v] = bias;
      }
      for (int j = 0; j < 256 / kSub; ++j) {
        I s[kSplit][MR][NP][V];
        for (int h = 0; h < kSplit; ++h)
          for (int r = 0; r < MR; ++r)
            for (int p = 0; p < NP; ++p)
              for (int v = 0; v < V; ++v) s[h][r][p][v] = Ops::ZeroI();
#pragma GCC unroll 8
        for (int gi = 0; gi < kGroups; ++gi) {
          const int g = kGroups * j + gi;
          const int h = gi % kSplit;
          I a[NP][V];
          for (int p = 0; p < NP; ++p)
            for (int v = 0; v < V; ++v) a[p][v] = Ops::LoadA(pb[p] + 64 * g + kLaneBytes * v);
          for (int r = 0; r < MR; ++r)
            for (int p = 0; p < NP; ++p)
              for (int v = 0; v < V; ++v) {
                s[h][r][p][v] = Ops::DotB(s[h][r][p][v], a[p][v], codes[r] + 4 * g);
              }
        }
        for (int r = 0; r < MR; ++r) {
          const I sc = Ops::SetI(rows[r].sc[16 * k + kSub / 16 * j]);
          for (int p = 0; p < NP; ++p)
            for (int v = 0; v < V; ++v) {
              I sj = s[0][r][p][v];
              if constexpr (kSplit == 2) sj = Ops::AddI(sj, s[1][r][p][v]);
              sumi[r][p][v] = Ops::AddI(sumi[r][p][v], Ops::MulLoI(sj, sc));
            }
        }
      }
      I summ[MR][NP][V];
      if constexpr (kMins) {
        for (int r = 0; r < MR; ++r)
          for (int p = 0; p < NP; ++p)
            for (int v = 0; v < V; ++v) summ[r][p][v] = Ops::ZeroI();
        for (int i = 0; i < 8; ++i) {
          I bs[NP][V];
          for (int p = 0; p < NP; ++p)
            for (int v = 0; v < V; ++v) {
              bs[p][v] = Ops::LoadA(pb[p] + 4160 + 64 * i + kLaneBytes * v);
            }
          for (int r = 0; r < MR; ++r) {
            const I mp = Ops::SetI(rows[r].mpairs[8 * k + i]);
            for (int p = 0; p < NP; ++p)
              for (int v = 0; v < V; ++v) {
                summ[r][p][v] = Ops::DotPairs(summ[r][p][v], bs[p][v], mp);
              }
          }
        }
      }
      for (int p = 0; p < NP; ++p) {
        for (int v = 0; v < V; ++v) {
          const F da = Ops::LoadF(reinterpret_cast<const float*>(pb[p] + 4096) + 16 / V * v);
          for (int r = 0; r < MR; ++r) {
            F t = Ops::Opaque(
                Ops::Mul(Ops::Mul(Ops::SetF(rows[r].d[k]), da), Ops::Cvt(sumi[r][p][v])));
            if constexpr (kMins) {
              const F m = Ops::Opaque(Ops::Mul(Ops::Mul(Ops::SetF(rows[r].dmin[k]), da),
                                               Ops::Cvt(summ[r][p][v])));
              t = Ops::Sub(t, m);
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

template <typename Ops, bool kMins, int kSub>
struct KTiles {
  template <int MR, int NP>
  static void Tile(const KRow* rows, const uint8_t* const* panel, int64_t n_blocks, float* out) {
    KTile<Ops, kMins, kSub, MR, NP>(rows, panel, n_blocks, out);
  }
};

template <typename Ops, int MR, int NP, GgmlType kType>
GemmRowsFn KRowsFor() {
  constexpr bool kMins = kType == GgmlType::kQ2_K || kType == GgmlType::kQ4_K ||
                         kType == GgmlType::kQ5_K;
  constexpr int kSub = kType == GgmlType::kQ4_K || kType == GgmlType::kQ5_K ? 32 : 16;
  return GemmRowsOf<KLayout, MR, NP, SelectTileOf<KRow, KTiles<Ops, kMins, kSub>, MR, NP>,
                    DecodeKGroup<kType, MR>>;
}

// The GemmRowsFn of a k-quant type with tiles of MR rows x NP panels, nullptr for other types.
template <typename Ops, int MR, int NP>
GemmRowsFn KGemmRows(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return KRowsFor<Ops, MR, NP, GgmlType::kQ2_K>();
    case GgmlType::kQ3_K:
      return KRowsFor<Ops, MR, NP, GgmlType::kQ3_K>();
    case GgmlType::kQ4_K:
      return KRowsFor<Ops, MR, NP, GgmlType::kQ4_K>();
    case GgmlType::kQ5_K:
      return KRowsFor<Ops, MR, NP, GgmlType::kQ5_K>();
    case GgmlType::kQ6_K:
      return KRowsFor<Ops, MR, NP, GgmlType::kQ6_K>();
    default:
      return nullptr;
  }
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_GEMM_KQUANT_X86_H_
