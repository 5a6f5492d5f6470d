// The CPU backend's attention kernels, as templates: one query head's causal attention over
// its sequence's paged K/V (AttendHeadBody, any head_dim, float cache) and several query heads
// of one KV head at once for head dims 64 and 128 (AttendHeadsFixed, float or binary16 cache:
// T = float or uint16_t). Internal linkage on purpose, like simd_x86.h: cpu_backend.cc
// instantiates them in target_clones functions, attention_f16_avx512.cc with its own flags.
#ifndef TESSERA_KERNELS_CPU_ATTENTION_KERNELS_H_
#define TESSERA_KERNELS_CPU_ATTENTION_KERNELS_H_

#ifdef __F16C__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/cpu/exp_poly.h"

namespace tessera {

// One query head's work: T is the cache's element type (float, or uint16_t binary16 bits).
template <typename T>
struct HeadAttentionOf {
  const float* q;        // (head_dim) this query head
  const T* k_base;       // K of slot 0 for this KV head; slot s at k_base + s * slot_stride
  const T* v_base;       // likewise for V
  int64_t slot_stride;   // elements between consecutive slots
  const int32_t* table;  // the sequence's block table
  int block_tokens;
  int ctx;               // attend to positions [0, ctx)
  int head_dim;
  float scale;           // 1 / sqrt(head_dim)
  float* scores;         // (ctx * heads) scratch
  float* out;            // (head_dim)
};
using HeadAttention = HeadAttentionOf<float>;
using HeadAttentionF16 = HeadAttentionOf<uint16_t>;

// Up to this many heads of one KV head per call, for head dims 64 and 128 (what fits the
// registers: N * HD / 16 output vectors).
inline constexpr int kMaxHeads64 = 4, kMaxHeads128 = 2;

// AttendHeadsFixed<64 or 128, n> over a[0 .. n) of an f16 cache, n <= kMaxHeads64/128
// (attention_f16_avx512.cc; only on CPUs with AVX-512).
void AttendHeadsF16Avx512(const HeadAttentionF16* a, int n);

namespace {  // NOLINT(build/namespaces): see the top of the file

// The dot product keeps 16 independent partial sums combined in a fixed order, so it vectorises
// without the compiler reassociating anything: the result does not depend on pointer alignment,
// which keeps a sequence's numbers the same whichever batch it runs in.
constexpr int kLanes = 16;

inline __attribute__((always_inline)) float Dot(const float* a, const float* b, int n) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// How many positions ahead the fixed-head-dim kernels prefetch V rows, and K rows (which are
// loaded 16 positions at a time).
inline constexpr int kSlotsAhead = 6, kKSlotsAhead = 16 + 8;

// Calls fn(p, slot, ahead) for the positions p = 0 .. ctx - 1 in order, slot being p's KV slot
// through the block table and ahead that of position p + kAhead (-1 past the context): block by
// block, so no position pays for a division.
template <int kAhead = kSlotsAhead, typename Fn>
inline __attribute__((always_inline)) void ForEachSlot(const int32_t* table, int block_tokens,
                                                       int ctx, Fn&& fn) {
  int b_ahead = kAhead / block_tokens, j_ahead = kAhead % block_tokens;
  for (int p0 = 0, b = 0; p0 < ctx; p0 += block_tokens, ++b) {
    const int64_t base = int64_t{table[b]} * block_tokens;
    const int n = std::min(block_tokens, ctx - p0);
    for (int j = 0; j < n; ++j) {
      const int p = p0 + j;
      const int64_t ahead =
          p + kAhead < ctx ? int64_t{table[b_ahead]} * block_tokens + j_ahead : -1;
      fn(p, base + j, ahead);
      if (++j_ahead == block_tokens) {
        j_ahead = 0;
        ++b_ahead;
      }
    }
  }
}

// scores[p] = exp(scores[p] - max_score) for p < ctx (exp_poly.h, vectorized); returns their
// sum, added in position order from +0.
inline __attribute__((always_inline)) float Softmax(float* scores, int ctx, float max_score) {
#pragma omp simd
  for (int p = 0; p < ctx; ++p) scores[p] = ExpPoly(scores[p] - max_score);
  float denom = 0.0f;
  for (int p = 0; p < ctx; ++p) denom += scores[p];
  return denom;
}

inline __attribute__((always_inline)) void AttendHeadBody(const HeadAttention& a) {
  const int hd = a.head_dim;
  float max_score = -std::numeric_limits<float>::infinity();
  ForEachSlot(a.table, a.block_tokens, a.ctx, [&](int p, int64_t slot, int64_t) {
    a.scores[p] = Dot(a.q, a.k_base + slot * a.slot_stride, hd) * a.scale;
    max_score = std::max(max_score, a.scores[p]);
  });
  const float denom = Softmax(a.scores, a.ctx, max_score);
  std::fill(a.out, a.out + hd, 0.0f);
  ForEachSlot(a.table, a.block_tokens, a.ctx, [&](int p, int64_t slot, int64_t) {
    const float w = a.scores[p] / denom;
    const float* v = a.v_base + slot * a.slot_stride;
#pragma omp simd
    for (int i = 0; i < hd; ++i) a.out[i] += w * v[i];
  });
}

// AttendHead for a head_dim known at compile time (64: SmolLM2, Llama 3.2 1B/3B; 128: Llama 3
// 8B..405B), with the same arithmetic in the same order, so the same bits: each score is Dot's
// 16 lanes (starting at +0, one product per element, elements i and i + 16 k in lane i mod 16)
// reduced by the same tree (lanes j + 8, then j + 4, j + 2, j + 1), and the output accumulates
// w * v position by position from +0. What changes is only where values live: the query and
// the output in vector registers for the whole context instead of memory on every position.
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

// (By pointer, not by value: a vector return type would change the ABI of the non-AVX-512
// clones.)
inline __attribute__((always_inline)) void Load16(const float* p, V16* v) {
  std::memcpy(v, p, sizeof *v);
}
#ifdef __F16C__
// 16 binary16 cache elements as floats (exact), for the f16 KV cache's kernels, which are
// compiled with F16C (attention_f16_avx512.cc).
inline __attribute__((always_inline)) void Load16(const uint16_t* p, V16* v) {
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  std::memcpy(v, &f, sizeof *v);
}
#endif

// Prefetches the K (or V) row at slot `ahead` (none when -1): a sequence's blocks may be
// scattered, and a head's rows within one block are a stream of a few KiB, too short for the
// hardware prefetchers to get ahead of at its start.
template <int kRowBytes, typename T>
inline __attribute__((always_inline)) void PrefetchRows(const HeadAttentionOf<T>& a,
                                                        int64_t ahead, bool v = false) {
  if (ahead < 0) return;
  const T* base = v ? a.v_base : a.k_base;
  const char* row = reinterpret_cast<const char*>(base + ahead * a.slot_stride);
  for (int o = 0; o < kRowBytes; o += 64) __builtin_prefetch(row + o);
}

// The scores of 16 consecutive positions p0 .. p0 + 15 (K rows at k_rows[i]) for N query heads:
// scores[n][p0 + i] = Dot(q_n, k_i) * scale, and vmax[n] = max(vmax[n], those scores). Each
// dot keeps AttendHead's 16 lanes and tree, but the 16 positions' lanes are reduced together:
// the tree's first two levels pair whole vectors (lane j with j + 8, then j with j + 4, as
// 256- and 128-bit halves of two positions side by side), the last two pair 64- and 32-bit
// elements of four positions, and one permutation puts the scores in position order. Same
// sums in the same order as one position at a time, so the same bits, with about a third of
// the shuffles and no scalar adds.
template <int HD, int N, typename T>
inline __attribute__((always_inline)) void ScoreGroup(const HeadAttentionOf<T>* a,
                                                      const V16 (&q)[N][HD / kLanes],
                                                      const T* const (&k_rows)[kLanes], int p0,
                                                      V16 (&vmax)[N]) {
  constexpr int kV = HD / kLanes;
  // The group's K rows as floats (converted once for all N heads).
  V16 k[kLanes][kV];
  for (int i = 0; i < kLanes; ++i) {
    for (int c = 0; c < kV; ++c) Load16(k_rows[i] + kLanes * c, &k[i][c]);
  }
  for (int n = 0; n < N; ++n) {
    V16 acc[kLanes];
    for (int i = 0; i < kLanes; ++i) {
      acc[i] = V16{};
      for (int c = 0; c < kV; ++c) acc[i] += q[n][c] * k[i][c];
    }
    // Lane j + 8 onto j: positions 2m and 2m + 1 in the low and high halves of h[m].
    V16 h[8];
    for (int m = 0; m < 8; ++m) {
      h[m] = __builtin_shufflevector(acc[2 * m], acc[2 * m + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17,
                                     18, 19, 20, 21, 22, 23) +
             __builtin_shufflevector(acc[2 * m], acc[2 * m + 1], 8, 9, 10, 11, 12, 13, 14, 15,
                                     24, 25, 26, 27, 28, 29, 30, 31);
    }
    // Lane j + 4 onto j: four positions' four lanes in each f[m].
    V16 f[4];
    for (int m = 0; m < 4; ++m) {
      f[m] = __builtin_shufflevector(h[2 * m], h[2 * m + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17,
                                     18, 19, 24, 25, 26, 27) +
             __builtin_shufflevector(h[2 * m], h[2 * m + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21,
                                     22, 23, 28, 29, 30, 31);
    }
    // Lanes 2, 3 onto 0, 1 of each position, then lane 1 onto 0.
    V16 g[2];
    for (int m = 0; m < 2; ++m) {
      g[m] = __builtin_shufflevector(f[2 * m], f[2 * m + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9,
                                     24, 25, 12, 13, 28, 29) +
             __builtin_shufflevector(f[2 * m], f[2 * m + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11,
                                     26, 27, 14, 15, 30, 31);
    }
    const V16 dots = __builtin_shufflevector(g[0], g[1], 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24,
                                             26, 12, 14, 28, 30) +
                     __builtin_shufflevector(g[0], g[1], 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25,
                                             27, 13, 15, 29, 31);
    // Lane 4 r + k holds position 4 k + r.
    const V16 scores = __builtin_shufflevector(dots, dots, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
                                               14, 3, 7, 11, 15) *
                       a[0].scale;
    std::memcpy(a[n].scores + p0, &scores, sizeof scores);
    vmax[n] = vmax[n] > scores ? vmax[n] : scores;
  }
}

// N query heads of one KV head (a[0 .. N): same K/V, table and context; own q, scores, out)
// at once: each K and V row is loaded once for all of them, and the N heads' output sums are
// independent chains (one head alone waits on the latency of every add). Per head, the
// operations and their order are exactly those of AttendHead. Scores come 16 positions at a
// time (ScoreGroup), the context's last ctx % 16 one by one.
template <int HD, int N, typename T>
inline __attribute__((always_inline)) void AttendHeadsFixed(const HeadAttentionOf<T>* a) {
  static_assert(HD % kLanes == 0, "whole vectors");
  constexpr int kV = HD / kLanes;
  const HeadAttentionOf<T>& a0 = a[0];
  V16 q[N][kV];
  V16 vmax[N];
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < kV; ++c) Load16(a[n].q + kLanes * c, &q[n][c]);
    for (int i = 0; i < kLanes; ++i) vmax[n][i] = -std::numeric_limits<float>::infinity();
  }
  const T* k_rows[kLanes];
  ForEachSlot<kKSlotsAhead>(a0.table, a0.block_tokens, a0.ctx,
                            [&](int p, int64_t slot, int64_t ahead) {
    PrefetchRows<HD * sizeof(T)>(a0, ahead);
    k_rows[p % kLanes] = a0.k_base + slot * a0.slot_stride;
    if (p % kLanes == kLanes - 1) ScoreGroup<HD, N>(a, q, k_rows, p - (kLanes - 1), vmax);
  });
  float max_score[N];
  for (int n = 0; n < N; ++n) {
    max_score[n] = vmax[n][0];
    for (int i = 1; i < kLanes; ++i) max_score[n] = std::max(max_score[n], vmax[n][i]);
  }
  for (int p = a0.ctx - a0.ctx % kLanes; p < a0.ctx; ++p) {
    V16 kc[kV];
    for (int c = 0; c < kV; ++c) Load16(k_rows[p % kLanes] + kLanes * c, &kc[c]);
    for (int n = 0; n < N; ++n) {
      V16 acc = {};
      for (int c = 0; c < kV; ++c) acc += q[n][c] * kc[c];
      const V8 h = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
      const V4 f =
          __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
      const float score = ((f[0] + f[2]) + (f[1] + f[3])) * a0.scale;
      a[n].scores[p] = score;
      max_score[n] = std::max(max_score[n], score);
    }
  }
  // Softmax, then the weights exp(score - max) / denom of every position (vectorized divisions,
  // the same as one at a time).
  for (int n = 0; n < N; ++n) {
    float* e = a[n].scores;
    const float m = max_score[n];
#pragma omp simd
    for (int p = 0; p < a0.ctx; ++p) e[p] = ExpPoly(e[p] - m);
  }
  // Each head's sum in position order from +0, the N heads' sums side by side (one sum alone
  // waits on the latency of every add).
  float denom[N] = {};
  for (int p = 0; p < a0.ctx; ++p) {
    for (int n = 0; n < N; ++n) denom[n] += a[n].scores[p];
  }
  for (int n = 0; n < N; ++n) {
    float* w = a[n].scores;
    const float d = denom[n];
#pragma omp simd
    for (int p = 0; p < a0.ctx; ++p) w[p] /= d;
  }
  V16 out[N][kV] = {};
  ForEachSlot(a0.table, a0.block_tokens, a0.ctx, [&](int p, int64_t slot, int64_t ahead) {
    const T* v = a0.v_base + slot * a0.slot_stride;
    PrefetchRows<HD * sizeof(T)>(a0, ahead, /*v=*/true);
    V16 vc[kV];
    for (int c = 0; c < kV; ++c) Load16(v + kLanes * c, &vc[c]);
    for (int n = 0; n < N; ++n) {
      const float w = a[n].scores[p];
      for (int c = 0; c < kV; ++c) out[n][c] += w * vc[c];
    }
  });
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < kV; ++c) std::memcpy(a[n].out + kLanes * c, &out[n][c], sizeof(V16));
  }
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_ATTENTION_KERNELS_H_
