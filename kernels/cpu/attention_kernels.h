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

// One query head's work over one chunk of its context, positions [first, end): T is the cache's
// element type (float, or uint16_t binary16 bits). With the scores s_p, their maximum m and the
// weights e_p = exp(s_p - m), the kernels leave the chunk's partial softmax where `stats` is
// given: out = the sum over p of e_p v_p, stats[0] = m, stats[1] = l, the sum of the e_p (in
// Sum's order); MergeChunks (cpu_backend.cc) combines a head's chunks in order. Where the chunk
// is the whole context (stats null), out = that sum times 1 / l: the attention itself.
template <typename T>
struct HeadAttentionOf {
  const float* q;        // (head_dim) this query head
  const T* k_base;       // K of slot 0 for this KV head; slot s at k_base + s * slot_stride
  const T* v_base;       // likewise for V
  int64_t slot_stride;   // elements between consecutive slots
  const int32_t* table;  // the sequence's block table
  int block_tokens;
  int first;             // attend to positions [first, end) (first a multiple of 16 for the
  int end;               // fixed-head-dim kernels)
  int head_dim;
  float scale;           // 1 / sqrt(head_dim)
  float* scores;         // (end - first) scratch
  float* out;            // (head_dim)
  float* stats;          // (2) or null, as above
  // Memory the fixed-head-dim kernels fetch into L2 during their V pass, one run every 16
  // positions (the next call's K rows, a run per cache block: that call starts on a warm
  // stream); read from a[0] only. All issued at once, the prefetches queued behind each other
  // and held up this call's own loads.
  const char* const* prefetch_runs = nullptr;
  int n_prefetch_runs = 0;
  int prefetch_run_bytes = 0;
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
// which keeps a sequence's numbers the same whichever batch it runs in. Each product is added
// to its lane by a fused multiply-add (one rounding; __builtin_fmaf is exact on every CPU, an
// instruction where the clone has FMA: the x86-64-v3 and AVX-512 ones), as is each weighted V
// row to the output: on AVX-512 CPUs that split 512-bit work over two pipes (Zen 4) separate
// multiplies and adds kept the adder busy with twice the operations.
constexpr int kLanes = 16;

inline __attribute__((always_inline)) float Dot(const float* a, const float* b, int n) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] = __builtin_fmaf(a[i + j], b[i + j], acc[j]);
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] = __builtin_fmaf(a[i], b[i], acc[j]);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// x[0] + ... + x[n - 1] in Dot's order: element i added to lane i mod 16 (from +0, in order),
// the lanes combined by the same tree. One vector add per 16 elements instead of a chain of
// scalar adds that waits on the latency of each.
inline __attribute__((always_inline)) float Sum(const float* x, int n) {
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += x[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// How many positions ahead the fixed-head-dim kernels prefetch V rows, and K rows (which are
// loaded 16 positions at a time).
inline constexpr int kSlotsAhead = 6, kKSlotsAhead = 16 + 8;
// How many groups of 16 positions ahead the K rows are prefetched where blocks hold whole groups.
inline constexpr int kGroupsAhead = 4;

// Calls fn(p, slot, ahead) for the positions p = first .. end - 1 in order, slot being p's KV
// slot through the block table and ahead that of position p + kAhead (-1 from end on):
// block by block, so no position pays for a division.
template <int kAhead = kSlotsAhead, typename Fn>
inline __attribute__((always_inline)) void ForEachSlot(const int32_t* table, int block_tokens,
                                                       int first, int end, Fn&& fn) {
  int b_ahead = (first + kAhead) / block_tokens, j_ahead = (first + kAhead) % block_tokens;
  for (int p0 = first - first % block_tokens, b = first / block_tokens; p0 < end;
       p0 += block_tokens, ++b) {
    const int64_t base = int64_t{table[b]} * block_tokens;
    const int n = std::min(block_tokens, end - p0);
    for (int j = std::max(0, first - p0); j < n; ++j) {
      const int p = p0 + j;
      const int64_t ahead =
          p + kAhead < end ? int64_t{table[b_ahead]} * block_tokens + j_ahead : -1;
      fn(p, base + j, ahead);
      if (++j_ahead == block_tokens) {
        j_ahead = 0;
        ++b_ahead;
      }
    }
  }
}

// Calls fn(p, row, ahead) for the positions p = first .. end - 1 in order, row being p's row
// (of the KV head's region at base, slot_stride elements between slots) and ahead that of
// position p + kAhead where it is in p's block or the next (nullptr otherwise): one table
// lookup per block, not per position.
template <int kAhead = kSlotsAhead, typename T, typename Fn>
inline __attribute__((always_inline)) void ForEachRow(const T* base, int64_t slot_stride,
                                                      const int32_t* table, int block_tokens,
                                                      int first, int end, Fn&& fn) {
  const int64_t block_stride = int64_t{block_tokens} * slot_stride;
  for (int p0 = first - first % block_tokens, b = first / block_tokens; p0 < end;
       p0 += block_tokens, ++b) {
    const int n = std::min(block_tokens, end - p0);
    const T* rows = base + table[b] * block_stride;
    const T* next = p0 + block_tokens < end ? base + table[b + 1] * block_stride : nullptr;
    for (int j = std::max(0, first - p0); j < n; ++j) {
      const int ja = j + kAhead;
      const T* ahead = nullptr;
      if (p0 + ja < end) {
        if (ja < block_tokens) {
          ahead = rows + ja * slot_stride;
        } else if (ja < 2 * block_tokens) {
          ahead = next + (ja - block_tokens) * slot_stride;
        }
      }
      fn(p0 + j, rows + j * slot_stride, ahead);
    }
  }
}

// scores[i] = exp(scores[i] - max_score) for i < n (exp_poly.h, vectorized); returns their Sum.
inline __attribute__((always_inline)) float Softmax(float* scores, int n, float max_score) {
#pragma omp simd
  for (int i = 0; i < n; ++i) scores[i] = ExpPoly(scores[i] - max_score);
  return Sum(scores, n);
}

inline __attribute__((always_inline)) void AttendHeadBody(const HeadAttention& a) {
  const int hd = a.head_dim;
  float max_score = -std::numeric_limits<float>::infinity();
  ForEachSlot(a.table, a.block_tokens, a.first, a.end, [&](int p, int64_t slot, int64_t) {
    float& score = a.scores[p - a.first];
    score = Dot(a.q, a.k_base + slot * a.slot_stride, hd) * a.scale;
    max_score = std::max(max_score, score);
  });
  const float sum = Softmax(a.scores, a.end - a.first, max_score);
  std::fill(a.out, a.out + hd, 0.0f);
  ForEachSlot(a.table, a.block_tokens, a.first, a.end, [&](int p, int64_t slot, int64_t) {
    const float w = a.scores[p - a.first];
    const float* v = a.v_base + slot * a.slot_stride;
#pragma omp simd
    for (int i = 0; i < hd; ++i) a.out[i] = __builtin_fmaf(w, v[i], a.out[i]);
  });
  if (a.stats != nullptr) {
    a.stats[0] = max_score;
    a.stats[1] = sum;
  } else {
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int i = 0; i < hd; ++i) a.out[i] *= inv;
  }
}

// AttendHead for a head_dim known at compile time (64: SmolLM2, Llama 3.2 1B/3B; 128: Llama 3
// 8B..405B), with the same arithmetic in the same order: each score is Dot's 16 lanes (one
// fused multiply-add per element, elements i and i + 16 k in lane i mod 16) reduced by the same
// tree (lanes j + 8, then j + 4, j + 2, j + 1), and the output accumulates w * v position by
// position. What changes is only where values live (the query and the output in vector
// registers for the whole context instead of memory on every position), and that a lane starts
// from its first product rather than +0 plus it: the two differ only where every product of the
// lane is -0 (a -0 sum instead of +0), and no score, maximum or weight changes with the sign of
// a zero (exp(s - max) is the same), so the outputs are the same bits.
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

// *acc = a * b + *acc, each lane rounded once (one vfmadd where the clone has FMA).
// (By pointer, not by value: a vector return type would change the ABI of the non-AVX-512
// clones.)
inline __attribute__((always_inline)) void MulAdd(const V16& a, const V16& b, V16* acc) {
  float x[kLanes], y[kLanes], z[kLanes];
  std::memcpy(x, &a, sizeof x);
  std::memcpy(y, &b, sizeof y);
  std::memcpy(z, acc, sizeof z);
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) z[i] = __builtin_fmaf(x[i], y[i], z[i]);
  std::memcpy(acc, z, sizeof z);
}
inline __attribute__((always_inline)) void MulAdd(float a, const V16& b, V16* acc) {
  float y[kLanes], z[kLanes];
  std::memcpy(y, &b, sizeof y);
  std::memcpy(z, acc, sizeof z);
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) z[i] = __builtin_fmaf(a, y[i], z[i]);
  std::memcpy(acc, z, sizeof z);
}

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

// The scores of 16 consecutive positions (K rows at row(i)) for N query heads: scores[n][s0 + i]
// = Dot(q_n, k_i) * scale, and vmax[n] = max(vmax[n], those scores). Each
// dot keeps AttendHead's 16 lanes and tree, but the 16 positions' lanes are reduced together:
// the tree's first two levels pair whole vectors (lane j with j + 8, then j with j + 4, as
// 256- and 128-bit halves of two positions side by side), the last two pair 64- and 32-bit
// elements of four positions, and one permutation puts the scores in position order. Same
// sums in the same order as one position at a time, so the same bits, with about a third of
// the shuffles and no scalar adds. The rows are taken two at a time, each pair's partial sums
// folded into the tree at once, so that what is live at any time (the queries, two rows, one
// partial result per level and head) fits the registers: nothing is spilled and reloaded.
template <int HD, int N, typename T, typename RowFn>
inline __attribute__((always_inline)) void ScoreGroup(const HeadAttentionOf<T>* a,
                                                      const V16 (&q)[N][HD / kLanes],
                                                      const RowFn& row, int s0,
                                                      V16 (&vmax)[N]) {
  constexpr int kV = HD / kLanes;
  V16 h_prev[N] = {}, f_prev[N] = {}, g_prev[N] = {};
  for (int m = 0; m < kLanes / 2; ++m) {
    // Rows 2m and 2m + 1 as floats (converted once for all N heads).
    V16 k0[kV], k1[kV];
    for (int c = 0; c < kV; ++c) {
      Load16(row(2 * m) + kLanes * c, &k0[c]);
      Load16(row(2 * m + 1) + kLanes * c, &k1[c]);
    }
    for (int n = 0; n < N; ++n) {
      V16 acc0 = q[n][0] * k0[0], acc1 = q[n][0] * k1[0];
      for (int c = 1; c < kV; ++c) {
        MulAdd(q[n][c], k0[c], &acc0);
        MulAdd(q[n][c], k1[c], &acc1);
      }
      // Lane j + 8 onto j: positions 2m and 2m + 1 in the low and high halves of h.
      const V16 h = __builtin_shufflevector(acc0, acc1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19,
                                            20, 21, 22, 23) +
                    __builtin_shufflevector(acc0, acc1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25,
                                            26, 27, 28, 29, 30, 31);
      if (m % 2 == 0) {
        h_prev[n] = h;
        continue;
      }
      // Lane j + 4 onto j: four positions' four lanes in f.
      const V16 f = __builtin_shufflevector(h_prev[n], h, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                            19, 24, 25, 26, 27) +
                    __builtin_shufflevector(h_prev[n], h, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22,
                                            23, 28, 29, 30, 31);
      if (m % 4 == 1) {
        f_prev[n] = f;
        continue;
      }
      // Lanes 2, 3 onto 0, 1 of each position (eight positions' two lanes in g).
      const V16 g = __builtin_shufflevector(f_prev[n], f, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24,
                                            25, 12, 13, 28, 29) +
                    __builtin_shufflevector(f_prev[n], f, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26,
                                            27, 14, 15, 30, 31);
      if (m == 3) {
        g_prev[n] = g;
        continue;
      }
      // Lane 1 onto 0.
      const V16 dots = __builtin_shufflevector(g_prev[n], g, 0, 2, 16, 18, 4, 6, 20, 22, 8, 10,
                                               24, 26, 12, 14, 28, 30) +
                       __builtin_shufflevector(g_prev[n], g, 1, 3, 17, 19, 5, 7, 21, 23, 9, 11,
                                               25, 27, 13, 15, 29, 31);
      // Lane 4 r + k holds position 4 k + r.
      const V16 scores = __builtin_shufflevector(dots, dots, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
                                                 14, 3, 7, 11, 15) *
                         a[0].scale;
      std::memcpy(a[n].scores + s0, &scores, sizeof scores);
      vmax[n] = vmax[n] > scores ? vmax[n] : scores;
    }
  }
}

// N query heads of one KV head (a[0 .. N): same K/V, table and positions; own q, scores, out)
// at once: each K and V row is loaded once for all of them, and the N heads' output sums are
// independent chains (one head alone waits on the latency of every add). Per head, the
// operations and their order are exactly those of AttendHead. Scores come 16 positions at a
// time (ScoreGroup), the chunk's last (end - first) % 16 one by one.
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
  const int bt = a0.block_tokens, first = a0.first, len = a0.end - first;
  if (bt % kLanes == 0) {
    // Every group of 16 positions lies in one block: 16 consecutive rows of the KV head's
    // region, found with one lookup, and prefetched kGroupsAhead groups ahead; the group's V
    // rows are fetched into L2 meanwhile, so the V pass does not start on a cold stream.
    const int groups_end = a0.end - len % kLanes;
    auto group_slot = [&](int p0) { return int64_t{a0.table[p0 / bt]} * bt + p0 % bt; };
    constexpr int kRowBytes = HD * static_cast<int>(sizeof(T));
    const int64_t stride_bytes = a0.slot_stride * static_cast<int64_t>(sizeof(T));
    for (int p0 = first; p0 < groups_end; p0 += kLanes) {
      if (p0 + kGroupsAhead * kLanes < a0.end) {
        const char* ahead = reinterpret_cast<const char*>(
            a0.k_base + group_slot(p0 + kGroupsAhead * kLanes) * a0.slot_stride);
        for (int i = 0; i < kLanes; ++i) {
          for (int o = 0; o < kRowBytes; o += 64) __builtin_prefetch(ahead + i * stride_bytes + o);
        }
      }
      const int64_t slot = group_slot(p0);
      const char* v = reinterpret_cast<const char*>(a0.v_base + slot * a0.slot_stride);
      for (int i = 0; i < kLanes; ++i) {
        // Locality 2: prefetcht1, into L2.
        for (int o = 0; o < kRowBytes; o += 64) __builtin_prefetch(v + i * stride_bytes + o, 0, 2);
      }
      const T* rows = a0.k_base + slot * a0.slot_stride;
      ScoreGroup<HD, N>(a, q, [&](int i) { return rows + i * a0.slot_stride; }, p0 - first,
                        vmax);
    }
    for (int p = groups_end; p < a0.end; ++p) {
      k_rows[p % kLanes] =
          a0.k_base + (int64_t{a0.table[p / bt]} * bt + p % bt) * a0.slot_stride;
    }
  } else {
    ForEachSlot<kKSlotsAhead>(a0.table, bt, first, a0.end,
                              [&](int p, int64_t slot, int64_t ahead) {
      PrefetchRows<HD * sizeof(T)>(a0, ahead);
      k_rows[p % kLanes] = a0.k_base + slot * a0.slot_stride;
      if (p % kLanes == kLanes - 1) {
        ScoreGroup<HD, N>(a, q, [&](int i) { return k_rows[i]; }, p - (kLanes - 1) - first,
                          vmax);
      }
    });
  }
  float max_score[N];
  for (int n = 0; n < N; ++n) {
    max_score[n] = vmax[n][0];
    for (int i = 1; i < kLanes; ++i) max_score[n] = std::max(max_score[n], vmax[n][i]);
  }
  for (int p = a0.end - len % kLanes; p < a0.end; ++p) {
    V16 kc[kV];
    for (int c = 0; c < kV; ++c) Load16(k_rows[p % kLanes] + kLanes * c, &kc[c]);
    for (int n = 0; n < N; ++n) {
      V16 acc = q[n][0] * kc[0];
      for (int c = 1; c < kV; ++c) MulAdd(q[n][c], kc[c], &acc);
      const V8 h = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
      const V4 f =
          __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
      const float score = ((f[0] + f[2]) + (f[1] + f[3])) * a0.scale;
      a[n].scores[p - first] = score;
      max_score[n] = std::max(max_score[n], score);
    }
  }
  // The weights exp(score - max) and their sum.
  float sum[N];
  for (int n = 0; n < N; ++n) sum[n] = Softmax(a[n].scores, len, max_score[n]);
  V16 out[N][kV] = {};
  auto prefetch_run = [&](int r) {
    for (int o = 0; o < a0.prefetch_run_bytes; o += 64) {
      __builtin_prefetch(a0.prefetch_runs[r] + o, 0, 2);  // prefetcht1: into L2
    }
  };
  ForEachRow(a0.v_base, a0.slot_stride, a0.table, bt, first, a0.end, [&](int p, const T* v,
                                                                         const T* ahead) {
    if (ahead != nullptr) {
      for (int o = 0; o < HD * static_cast<int>(sizeof(T)); o += 64) {
        __builtin_prefetch(reinterpret_cast<const char*>(ahead) + o);
      }
    }
    const int s = p - first;
    if (s % kLanes == 0 && s / kLanes < a0.n_prefetch_runs) prefetch_run(s / kLanes);
    V16 vc[kV];
    for (int c = 0; c < kV; ++c) Load16(v + kLanes * c, &vc[c]);
    for (int n = 0; n < N; ++n) {
      const float w = a[n].scores[s];
      for (int c = 0; c < kV; ++c) MulAdd(w, vc[c], &out[n][c]);
    }
  });
  for (int r = (len + kLanes - 1) / kLanes; r < a0.n_prefetch_runs; ++r) prefetch_run(r);
  for (int n = 0; n < N; ++n) {
    if (a[n].stats != nullptr) {
      a[n].stats[0] = max_score[n];
      a[n].stats[1] = sum[n];
    } else {
      const float inv = 1.0f / sum[n];
      for (int c = 0; c < kV; ++c) out[n][c] *= inv;
    }
    for (int c = 0; c < kV; ++c) std::memcpy(a[n].out + kLanes * c, &out[n][c], sizeof(V16));
  }
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_ATTENTION_KERNELS_H_
