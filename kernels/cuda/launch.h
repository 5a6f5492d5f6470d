// Host entry points of the CUDA kernels (kernels/cuda/*.cu). Each enqueues its kernels on
// `stream` and returns the launch's cudaError_t (cudaGetLastError), never waiting for the
// device; faults inside a kernel surface at the backend's next synchronisation.
//
// All pointers are device memory unless named *_host. Shapes follow kernels/backend.h
// (row-major, "(n_tokens, dim)"). Weights are GGUF blocks stored compactly: row r of a matrix
// starts at r * row_bytes from a cudaMalloc'd base. `type` is the GGUF type id.
#ifndef TESSERA_KERNELS_CUDA_LAUNCH_H_
#define TESSERA_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera::cuda {

// Most tokens the fused matvec handles in one pass over the weights.
inline constexpr int kMaxFusedTokens = 16;
// Up to this many tokens the backend prefers the fused matvec to the fp16 GEMM path
// (CudaBackend::set_max_fused_tokens overrides; cuda_kernel_bench times both).
// Measured on an H200 (bench/RESULTS.md, 2026-12-04): at 8 tokens the GEMM path was already
// 1.1-1.5x faster than the fused kernels, whose time grows with the tokens (~14 us per token on
// a 14336 x 4096 Q4_0 matrix, against ~36 us for one token).
inline constexpr int kDefaultMaxFusedTokens = 4;

// True if the fused dequantize x matvec kernel exists for `type` with `cols` columns.
bool FusedMatVecSupports(uint32_t type, int64_t cols);

// y (n_tokens, rows) = x (n_tokens, cols) W^T, reading W's blocks once for all n_tokens
// (1 <= n_tokens <= kMaxFusedTokens). W stays quantized; codes are decoded in registers.
cudaError_t LaunchFusedMatVec(uint32_t type, const void* w, int64_t rows, int64_t cols,
                              int64_t row_bytes, const float* x, int n_tokens, float* y,
                              cudaStream_t stream);

// True if DequantizeRows* handle `type` (every format with a device decoder).
bool DequantizeSupports(uint32_t type);

// out (n, cols) float32 = rows ids[i] of W (ids in device memory, already range-checked).
cudaError_t LaunchDequantizeRowsF32(uint32_t type, const void* w, int64_t cols,
                                    int64_t row_bytes, const int32_t* ids, int64_t n,
                                    float* out, cudaStream_t stream);
// out (n_rows, cols) fp16 = rows [row0, row0 + n_rows) of W (the fp16 GEMM path).
cudaError_t LaunchDequantizeRowsF16(uint32_t type, const void* w, int64_t cols,
                                    int64_t row_bytes, int64_t row0, int64_t n_rows,
                                    uint16_t* out, cudaStream_t stream);
cudaError_t LaunchFloatToHalf(const float* x, int64_t n, uint16_t* out, cudaStream_t stream);

// y = x / sqrt(mean(x^2) + eps) * gain per row of (n_tokens, dim); y may alias x.
cudaError_t LaunchRmsNorm(const float* x, const float* gain, int64_t n_tokens, int64_t dim,
                          float eps, float* y, cudaStream_t stream);
// Rotates pairs (2i, 2i+1), i < rope_dims / 2, of each head at positions[t] * inv_freq[i]
// (angles and their sine/cosine in double, as the CPU backend does).
cudaError_t LaunchRope(float* x, int64_t n_tokens, int n_heads, int head_dim, int rope_dims,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream);
cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream);
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);
cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int64_t n_rows, int64_t dim,
                             float* dst, cudaStream_t stream);

// Paged attention over the KV cache of one layer: k_cache / v_cache point at slot 0 of the
// layer's K and V; slot s of KV head h at cache + (s * n_kv_heads + h) * head_dim.
struct AttentionArgs {
  const float* q;            // (n_tokens, n_heads * head_dim)
  const float* k;            // (n_tokens, n_kv_heads * head_dim), this step's keys
  const float* v;
  float* k_cache;
  float* v_cache;
  float* out;                // (n_tokens, n_heads * head_dim)
  const int64_t* slot_of_token;  // (n_tokens)
  const int32_t* position;       // (n_tokens)
  const int32_t* seq_of_token;   // (n_tokens)
  const int32_t* table_begin;    // (n_seqs): offset of each sequence's blocks in `tables`
  const int32_t* tables;         // block ids, all sequences concatenated
  int64_t n_tokens = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;              // <= kMaxHeadDim
  int block_tokens = 0;
  // Split of each token's context into chunks attended in parallel (PlanAttention), and the
  // workspace for their partial results (AttentionPlan::workspace_floats).
  int n_chunks = 1;
  int chunk_len = 0;
  float* partials = nullptr;
};
inline constexpr int kMaxHeadDim = 256;

// How LaunchAttention splits the work: head_dim a multiple of 32 takes the split-context
// ("flash decoding") kernels, chunks of chunk_len positions attended by separate thread blocks
// then merged; other head dims take a one-pass kernel that needs no workspace.
struct AttentionPlan {
  int n_chunks = 1;
  int chunk_len = 0;
  int64_t workspace_floats = 0;
};
// max_ctx: the longest context of the step's tokens (max position + 1); sm_count: the
// device's multiprocessors (enough chunks are made to give each several blocks).
AttentionPlan PlanAttention(int64_t n_tokens, int n_heads, int n_kv_heads, int head_dim,
                            int max_ctx, int sm_count);

// Stores this step's K/V rows at their slots, then attends (online softmax). `a` carries the
// plan's n_chunks, chunk_len and a workspace of its workspace_floats.
cudaError_t LaunchAttention(const AttentionArgs& a, cudaStream_t stream);

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_LAUNCH_H_
