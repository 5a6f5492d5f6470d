// Paged causal grouped-query attention (kernels/cuda/launch.h), same semantics as the CPU
// backend: token t attends to positions 0..position[t] of its sequence, whose K/V rows live in
// the slots its block table names (slot = block * block_tokens + position % block_tokens).
//
// First the step's K/V rows are stored at their slots. Then one 128-thread block per (query
// head, token): each warp takes tiles of 32 positions (warp w: tiles w, w + 4, ...); lane j
// scores position 32 i + j against q, the warp updates a running max / denominator / output
// (online softmax, Milakov & Gimelshein 2018) with lanes splitting head_dim for the V sum, and
// the four warps' partial results are merged at the end. Prefill uses the same kernel (each
// query re-reads its keys through L2); a tiled tensor-core prefill is future work.
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

}  // namespace

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
  AttendKernel<<<grid, kWarps * 32, 0, stream>>>(a, 1.0f / sqrtf(static_cast<float>(a.head_dim)));
  return cudaGetLastError();
}

}  // namespace tessera::cuda
