// Paged causal grouped-query attention (kernels/cuda/launch.h), same semantics as the CPU
// backend: token t attends to positions 0..position[t] of its sequence, whose K/V rows live in
// the slots its block table names (slot = block * block_tokens + position % block_tokens).
//
// First the step's K/V rows are stored at their slots. Then, for head_dim a multiple of 32,
// split-context attention ("flash decoding"): each token's context is cut into chunks
// (PlanAttention: enough chunks that even one decoding sequence gives every multiprocessor
// several blocks), and one 128-thread block per (chunk, KV head, group of up to 4 query heads
// sharing it, token) walks its chunk in tiles of 128 positions: each thread scores one position
// against the group's queries (its K row read with 16-byte loads), the tile's softmax weights
// go to shared memory with a running max and denominator (online softmax, Milakov & Gimelshein
// 2018), and each warp adds a quarter of the tile's V rows (lanes split head_dim, so a V row is
// one coalesced read). A second kernel merges the chunks' (max, denominator, sum) triples. K and
// V are read once per group of query heads, not once per head. Prefill uses the same kernels
// (a query per token; a tiled tensor-core prefill is future work). Other head dims take a
// one-pass kernel (one block per query head and token).
#include <cfloat>

#include "kernels/cuda/launch.h"

namespace tessera::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kDimsPerLane = kMaxHeadDim / 32;

__global__ void StoreKvKernel(AttentionArgs a, int64_t kv_floats) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= a.n_tokens * kv_floats) return;
  const int64_t t = idx / kv_floats, i = idx % kv_floats;
  const int64_t dst = a.slot_of_token[t] * kv_floats + i;
  a.k_cache[dst] = a.k[idx];
  a.v_cache[dst] = a.v[idx];
}

__global__ void __launch_bounds__(kWarps * 32) AttendKernel(AttentionArgs a, float scale) {
  __shared__ float q_sh[kMaxHeadDim];
  __shared__ float acc_sh[kWarps][kMaxHeadDim];
  __shared__ float max_sh[kWarps], denom_sh[kWarps];

  const int h = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int hd = a.head_dim;
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* q = a.q + (t * a.n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) q_sh[d] = q[d];
  __syncthreads();

  const int ctx = a.position[t] + 1;
  const int32_t* table = a.tables + a.table_begin[a.seq_of_token[t]];
  const int64_t slot_stride = int64_t{a.n_kv_heads} * hd;
  const float* k_base = a.k_cache + int64_t{kvh} * hd;
  const float* v_base = a.v_cache + int64_t{kvh} * hd;

  float run_max = -FLT_MAX, denom = 0.0f;
  float acc[kDimsPerLane];
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) acc[k] = 0.0f;

  for (int tile = warp * 32; tile < ctx; tile += kWarps * 32) {
    const int p = tile + lane;
    const bool valid = p < ctx;
    int64_t slot = 0;
    float score = -FLT_MAX;
    if (valid) {
      slot = int64_t{table[p / a.block_tokens]} * a.block_tokens + p % a.block_tokens;
      const float* kr = k_base + slot * slot_stride;
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot = fmaf(q_sh[d], kr[d], dot);
      score = dot * scale;
    }
    float tile_max = score;
    for (int width = 16; width > 0; width /= 2) {
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, width));
    }
    const float new_max = fmaxf(run_max, tile_max);
    const float correction = expf(run_max - new_max);  // 0 on the first tile
    const float weight = valid ? expf(score - new_max) : 0.0f;
    float tile_sum = weight;
    for (int width = 16; width > 0; width /= 2) {
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, width);
    }
    denom = denom * correction + tile_sum;
    run_max = new_max;
#pragma unroll
    for (int k = 0; k < kDimsPerLane; ++k) acc[k] *= correction;
    const int n_valid = min(32, ctx - tile);
    for (int j = 0; j < n_valid; ++j) {
      const float wj = __shfl_sync(0xffffffffu, weight, j);
      const int64_t sj = __shfl_sync(0xffffffffu, slot, j);
      const float* vr = v_base + sj * slot_stride;
#pragma unroll
      for (int k = 0; k < kDimsPerLane; ++k) {
        const int d = lane + 32 * k;
        if (d < hd) acc[k] = fmaf(wj, vr[d], acc[k]);
      }
    }
  }

  if (lane == 0) {
    max_sh[warp] = run_max;
    denom_sh[warp] = denom;
  }
#pragma unroll
  for (int k = 0; k < kDimsPerLane; ++k) {
    const int d = lane + 32 * k;
    if (d < hd) acc_sh[warp][d] = acc[k];
  }
  __syncthreads();
  float global_max = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) global_max = fmaxf(global_max, max_sh[w]);
  float total = 0.0f;
  float factor[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no position keeps denom 0 and contributes nothing.
    factor[w] = denom_sh[w] > 0.0f ? expf(max_sh[w] - global_max) : 0.0f;
    total += denom_sh[w] * factor[w];
  }
  float* out = a.out + (t * a.n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) sum += acc_sh[w][d] * factor[w];
    out[d] = sum / total;
  }
}

// --- split-context kernels (head_dim = kHd, a multiple of 32)

constexpr int kFlashWarps = 4;
constexpr int kFlashThreads = kFlashWarps * 32;
constexpr int kTile = 128;     // positions per tile: one per thread when scoring
constexpr int kMaxGroup = 4;   // query heads per block (of the same KV head)

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int width = 16; width > 0; width /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, width));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int width = 16; width > 0; width /= 2) v += __shfl_xor_sync(0xffffffffu, v, width);
  return v;
}

// kDpl consecutive floats from p (p aligned to 4 * kDpl bytes).
template <int kDpl>
__device__ __forceinline__ void LoadDims(const float* p, float* v) {
  if constexpr (kDpl % 4 == 0) {
#pragma unroll
    for (int k = 0; k < kDpl / 4; ++k) {
      const float4 f = reinterpret_cast<const float4*>(p)[k];
      v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
    }
  } else if constexpr (kDpl % 2 == 0) {
#pragma unroll
    for (int k = 0; k < kDpl / 2; ++k) {
      const float2 f = reinterpret_cast<const float2*>(p)[k];
      v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kDpl; ++k) v[k] = p[k];
  }
}

// Grid (chunk, KV head x query-head group, token). Writes, for each query head h of the group,
// partials[((t * n_heads + h) * n_chunks + chunk) * (kHd + 2) + i]: i < kHd the unnormalised
// sum of softmax-weighted V rows, kHd the running max, kHd + 1 the denominator.
template <int kHd>
__global__ void __launch_bounds__(kFlashThreads) FlashPartialKernel(AttentionArgs a, float scale) {
  constexpr int kDpl = kHd / 32;  // dims per lane in the V sum
  __shared__ __align__(16) float q_sh[kMaxGroup][kHd];
  __shared__ float s_sh[kMaxGroup][kTile];
  __shared__ float p_sh[kMaxGroup][kTile];
  __shared__ int64_t slot_sh[2][kTile];  // by tile parity: a fast warp may score the next tile
  __shared__ float red_sh[kFlashWarps][kMaxGroup][kHd];

  const int chunk = blockIdx.x;
  const int64_t t = blockIdx.z;
  const int group = a.n_heads / a.n_kv_heads;
  const int groups_per_kv = (group + kMaxGroup - 1) / kMaxGroup;
  const int kvh = blockIdx.y / groups_per_kv;
  const int h0 = kvh * group + (blockIdx.y % groups_per_kv) * kMaxGroup;
  const int ng = min(kMaxGroup, kvh * group + group - h0);
  const int ctx = a.position[t] + 1;
  const int begin = chunk * a.chunk_len;
  if (begin >= ctx) return;  // block-uniform: this token's context ends before the chunk
  const int end = min(ctx, begin + a.chunk_len);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int i = threadIdx.x; i < kMaxGroup * kHd; i += kFlashThreads) {
    const int g = i / kHd, d = i % kHd;
    q_sh[g][d] = g < ng ? a.q[(t * a.n_heads + h0 + g) * kHd + d] : 0.0f;
  }
  __syncthreads();

  const int32_t* table = a.tables + a.table_begin[a.seq_of_token[t]];
  const int64_t slot_stride = int64_t{a.n_kv_heads} * kHd;
  const float* k_base = a.k_cache + int64_t{kvh} * kHd;
  const float* v_base = a.v_cache + int64_t{kvh} * kHd;

  float run_max[kMaxGroup], denom[kMaxGroup], acc[kMaxGroup][kDpl];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    run_max[g] = -INFINITY;
    denom[g] = 0.0f;
#pragma unroll
    for (int k = 0; k < kDpl; ++k) acc[g][k] = 0.0f;
  }

  for (int tile0 = begin, parity = 0; tile0 < end; tile0 += kTile, parity ^= 1) {
    // Scores: thread i takes position tile0 + i.
    {
      const int p = tile0 + static_cast<int>(threadIdx.x);
      float dot[kMaxGroup];
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) dot[g] = -INFINITY;
      int64_t slot = 0;
      if (p < end) {
        slot = int64_t{table[p / a.block_tokens]} * a.block_tokens + p % a.block_tokens;
        const float4* kr = reinterpret_cast<const float4*>(k_base + slot * slot_stride);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) dot[g] = 0.0f;
#pragma unroll 8
        for (int d4 = 0; d4 < kHd / 4; ++d4) {
          const float4 kv = kr[d4];
#pragma unroll
          for (int g = 0; g < kMaxGroup; ++g) {
            const float4 qv = reinterpret_cast<const float4*>(q_sh[g])[d4];
            dot[g] = fmaf(qv.x, kv.x, dot[g]);
            dot[g] = fmaf(qv.y, kv.y, dot[g]);
            dot[g] = fmaf(qv.z, kv.z, dot[g]);
            dot[g] = fmaf(qv.w, kv.w, dot[g]);
          }
        }
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) dot[g] *= scale;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) s_sh[g][threadIdx.x] = dot[g];
      slot_sh[parity][threadIdx.x] = slot;
    }
    __syncthreads();
    // Every warp reduces the tile's max itself (same values, same order: identical results),
    // then each thread turns its own scores into weights.
    float correction[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      float m = s_sh[g][lane];
#pragma unroll
      for (int j = 1; j < kTile / 32; ++j) m = fmaxf(m, s_sh[g][lane + 32 * j]);
      const float new_max = fmaxf(run_max[g], WarpMax(m));
      correction[g] = expf(run_max[g] - new_max);  // 0 on the first tile (exp(-inf))
      run_max[g] = new_max;
      const float sc = s_sh[g][threadIdx.x];
      p_sh[g][threadIdx.x] = sc == -INFINITY ? 0.0f : expf(sc - new_max);
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      float sum = p_sh[g][lane];
#pragma unroll
      for (int j = 1; j < kTile / 32; ++j) sum += p_sh[g][lane + 32 * j];
      denom[g] = denom[g] * correction[g] + WarpSum(sum);
#pragma unroll
      for (int k = 0; k < kDpl; ++k) acc[g][k] *= correction[g];
    }
    // V: warp w adds positions w, w + 4, ... of the tile; lane l owns dims l * kDpl ...
    const int n_valid = min(kTile, end - tile0);
#pragma unroll 4
    for (int i = warp; i < n_valid; i += kFlashWarps) {
      float v[kDpl];
      LoadDims<kDpl>(v_base + slot_sh[parity][i] * slot_stride + lane * kDpl, v);
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        const float w = p_sh[g][i];
#pragma unroll
        for (int k = 0; k < kDpl; ++k) acc[g][k] = fmaf(w, v[k], acc[g][k]);
      }
    }
  }

  // The four warps' sums (over disjoint positions, same running max) into one.
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
#pragma unroll
    for (int k = 0; k < kDpl; ++k) red_sh[warp][g][lane * kDpl + k] = acc[g][k];
  }
  __syncthreads();
  const int64_t stride = int64_t{kHd} + 2;
  for (int i = threadIdx.x; i < ng * kHd; i += kFlashThreads) {
    const int g = i / kHd, d = i % kHd;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kFlashWarps; ++w) sum += red_sh[w][g][d];
    a.partials[((t * a.n_heads + h0 + g) * a.n_chunks + chunk) * stride + d] = sum;
  }
  if (threadIdx.x < ng) {
    const int g = threadIdx.x;
    float* tail = a.partials + ((t * a.n_heads + h0 + g) * a.n_chunks + chunk) * stride + kHd;
    // run_max / denom are the same in every thread; pick g's without a runtime register index.
#pragma unroll
    for (int j = 0; j < kMaxGroup; ++j) {
      if (j == g) {
        tail[0] = run_max[j];
        tail[1] = denom[j];
      }
    }
  }
}

// Grid (query head, token): merges the chunks this token's context reaches.
__global__ void FlashCombineKernel(AttentionArgs a) {
  const int h = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int hd = a.head_dim;
  const int64_t stride = int64_t{hd} + 2;
  const int used = (a.position[t] + a.chunk_len) / a.chunk_len;  // ceil((position + 1) / len)
  const float* part = a.partials + (t * a.n_heads + h) * a.n_chunks * stride;
  float global_max = -INFINITY;
  for (int c = 0; c < used; ++c) global_max = fmaxf(global_max, part[c * stride + hd]);
  float total = 0.0f;
  for (int c = 0; c < used; ++c) {
    total += part[c * stride + hd + 1] * expf(part[c * stride + hd] - global_max);
  }
  float* out = a.out + (t * a.n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f;
    for (int c = 0; c < used; ++c) {
      sum = fmaf(part[c * stride + d], expf(part[c * stride + hd] - global_max), sum);
    }
    out[d] = sum / total;
  }
}

template <int kHd>
void LaunchFlash(const AttentionArgs& a, cudaStream_t stream) {
  const int group = a.n_heads / a.n_kv_heads;
  const dim3 grid(static_cast<unsigned>(a.n_chunks),
                  static_cast<unsigned>(a.n_kv_heads * ((group + kMaxGroup - 1) / kMaxGroup)),
                  static_cast<unsigned>(a.n_tokens));
  FlashPartialKernel<kHd><<<grid, kFlashThreads, 0, stream>>>(
      a, 1.0f / sqrtf(static_cast<float>(kHd)));
}

}  // namespace

AttentionPlan PlanAttention(int64_t n_tokens, int n_heads, int n_kv_heads, int head_dim,
                            int max_ctx, int sm_count) {
  AttentionPlan plan;
  if (head_dim % 32 != 0 || head_dim > kMaxHeadDim || n_kv_heads <= 0 || n_heads <= 0 ||
      max_ctx <= 0 || n_tokens <= 0) {
    return plan;  // the one-pass kernel
  }
  const int group = n_heads / n_kv_heads;
  const int64_t base_blocks =
      n_tokens * n_kv_heads * ((group + kMaxGroup - 1) / kMaxGroup);
  const int64_t max_tiles = (max_ctx + kTile - 1) / kTile;
  const int64_t want = (4 * int64_t{sm_count > 0 ? sm_count : 1} + base_blocks - 1) / base_blocks;
  const int64_t chunks = want < 1 ? 1 : (want < max_tiles ? want : max_tiles);
  const int64_t tiles_per_chunk = (max_tiles + chunks - 1) / chunks;
  plan.chunk_len = static_cast<int>(tiles_per_chunk * kTile);
  plan.n_chunks = static_cast<int>((max_ctx + plan.chunk_len - 1) / plan.chunk_len);
  plan.workspace_floats = n_tokens * n_heads * plan.n_chunks * (int64_t{head_dim} + 2);
  return plan;
}

cudaError_t LaunchAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_tokens <= 0) return cudaSuccess;
  if (a.head_dim <= 0 || a.head_dim > kMaxHeadDim || a.n_kv_heads <= 0 ||
      a.n_heads % a.n_kv_heads != 0 || a.n_tokens > 65535) {
    return cudaErrorInvalidValue;
  }
  const int64_t kv_floats = int64_t{a.n_kv_heads} * a.head_dim;
  const int64_t n = a.n_tokens * kv_floats;
  StoreKvKernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(a, kv_floats);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.n_tokens));
  if (a.head_dim % 32 != 0 || a.chunk_len <= 0 || a.partials == nullptr) {
    AttendKernel<<<grid, kWarps * 32, 0, stream>>>(a,
                                                   1.0f / sqrtf(static_cast<float>(a.head_dim)));
    return cudaGetLastError();
  }
  switch (a.head_dim / 32) {
    case 1: LaunchFlash<32>(a, stream); break;
    case 2: LaunchFlash<64>(a, stream); break;
    case 3: LaunchFlash<96>(a, stream); break;
    case 4: LaunchFlash<128>(a, stream); break;
    case 5: LaunchFlash<160>(a, stream); break;
    case 6: LaunchFlash<192>(a, stream); break;
    case 7: LaunchFlash<224>(a, stream); break;
    default: LaunchFlash<256>(a, stream); break;
  }
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  FlashCombineKernel<<<grid, kFlashThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tessera::cuda
