// Backend: where the forward pass runs. The model code (model/llama.cc) is written once against
// this interface; CpuBackend (kernels/cpu/cpu_backend.h) and CudaBackend (kernels/cuda/) slot in
// underneath without the model knowing which one it has.
//
// Memory: activations and the KV cache live in the backend's memory (host RAM for the CPU,
// device memory for CUDA) and are passed around as raw `float*` of that memory; weights are
// loaded once through LoadWeight (the CPU backend keeps pointing into the GGUF mmap, a GPU
// backend uploads). Small per-step metadata (token ids, positions, block tables) is passed in
// host memory and uploaded by the backend as needed.
//
// Shapes are row-major: "(n_tokens, dim)" means n_tokens rows of dim floats.
// Thread-safety: a backend instance is used by one engine thread at a time.
#ifndef TESSERA_KERNELS_BACKEND_H_
#define TESSERA_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace tessera {

// A weight matrix or vector resident in the backend's memory.
class Weight {
 public:
  virtual ~Weight() = default;
  virtual const QuantMatrix& matrix() const = 0;  // shape and type; data is backend memory
  virtual int64_t device_bytes() const = 0;       // bytes this weight occupies on the device
};

// A block of backend memory for activations (float32).
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  virtual float* data() = 0;
  virtual int64_t n_floats() const = 0;
};

// Rotary position embedding parameters (RoPE, Su et al. 2021), applied to adjacent pairs
// (x[2i], x[2i+1]) as GGUF llama weights expect. Llama 3 "llama3" scaling changes the
// per-pair frequencies (see RopeFrequencies).
struct RopeParams {
  int head_dim = 0;
  int rope_dims = 0;  // leading dims of each head that rotate (= head_dim for llama)
  float freq_base = 10000.0f;
  // Llama 3 scaling; factor <= 1 disables it.
  float scaling_factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_context = 8192;
  // Per-pair frequency divisors (GGUF `rope_freqs.weight`, rope_dims / 2 values) that some
  // Llama 3.1+ files carry instead of the scaling keys; empty when absent.
  std::vector<float> freq_factors;
};

// The inverse frequency of each rotated pair (rope_dims / 2 values), with llama3 scaling.
std::vector<float> RopeFrequencies(const RopeParams& p);

// OK when rope_dims is even, in (0, head_dim], and freq_factors is empty or has rope_dims / 2
// values; INVALID_ARGUMENT naming the dims otherwise. Every backend's Rope checks this first.
absl::Status CheckRopeParams(const RopeParams& p);

// How the KV cache stores K and V: float32, or IEEE binary16 (half the memory and the bytes a
// decode step reads, at a relative rounding error of at most 2^-11 per element, the cache
// type llama.cpp uses by default).
enum class KvType { kF32, kF16 };
inline int64_t KvTypeBytes(KvType t) { return t == KvType::kF16 ? 2 : 4; }
inline const char* KvTypeName(KvType t) { return t == KvType::kF16 ? "f16" : "f32"; }

// Geometry of the paged KV cache a backend allocates for its shard.
struct KvLayout {
  int n_layers = 0;     // layers this shard owns
  int n_kv_heads = 0;   // KV heads this shard owns
  int head_dim = 0;
  int block_tokens = 16;
  int64_t n_blocks = 0;
  KvType type = KvType::kF32;
  int64_t bytes() const {
    return int64_t{2} * n_layers * n_blocks * block_tokens * n_kv_heads * head_dim *
           KvTypeBytes(type);
  }
};

// One step's attention metadata, in host memory. Token t belongs to sequence seq_of_token[t]
// at absolute position position[t] and attends causally to positions 0..position[t] of its
// sequence (whose K/V for this step have already been stored).
struct AttentionBatch {
  std::vector<int32_t> seq_of_token;             // (n_tokens)
  std::vector<int32_t> position;                 // (n_tokens)
  std::vector<std::vector<int32_t>> block_table; // per sequence: block ids in token order
  // Flattened KV slot (block * block_tokens + offset) of each token's own position.
  std::vector<int64_t> slot_of_token;            // (n_tokens)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // --- memory
  virtual absl::StatusOr<std::unique_ptr<Weight>> LoadWeight(const QuantMatrix& host) = 0;
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t n_floats) = 0;
  // INVALID_ARGUMENT / UNIMPLEMENTED naming what is wrong for a layout (or a KvType) the
  // backend cannot hold.
  virtual absl::Status AllocateKvCache(const KvLayout& layout) = 0;
  // The KV cache type this backend runs best with (engines use it unless told otherwise).
  virtual KvType PreferredKvType() const { return KvType::kF32; }
  virtual absl::Status CopyToHost(const float* device, int64_t n_floats, float* host) = 0;
  virtual absl::Status CopyToDevice(const float* host, int64_t n_floats, float* device) = 0;
  // Whether the ops may write host memory directly (the device is the host: the CPU backend), so
  // a result the caller wants on the host needs no buffer and copy of its own.
  virtual bool WritesHostMemory() const { return false; }

  // --- ops (errors only for bad shapes/types; kernels themselves do not fail)
  // out (n_tokens, dim) = rows `ids` of the table (n_vocab, dim), dequantized.
  virtual absl::Status Embed(const Weight& table, const int32_t* ids, int64_t n_tokens,
                             float* out) = 0;
  // y (n_tokens, w.rows) = x (n_tokens, w.cols) W^T.
  virtual absl::Status MatMul(const Weight& w, const float* x, int64_t n_tokens, float* y) = 0;
  // Several products of one x (n_tokens, cols): y_i (n_tokens, w_i.rows) = x W_i^T for each of
  // the n_outs outputs (a layer's Q, K and V projections; the FFN's gate and up). The same
  // numbers as MatMul on each; a backend may prepare x once and run them as one launch. The
  // default calls MatMul on each.
  struct MatMulOut {
    const Weight* w;
    float* y;
  };
  virtual absl::Status MatMuls(const float* x, int64_t n_tokens, const MatMulOut* outs,
                               int n_outs) {
    for (int i = 0; i < n_outs; ++i) {
      if (absl::Status s = MatMul(*outs[i].w, x, n_tokens, outs[i].y); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // x += residual (the block's output added to the residual stream; none when null), then
  // h = RmsNorm(x), then MatMuls of h: the same numbers as Add, RmsNorm and MatMuls, and x and
  // h (n_tokens, dim) are written too. A backend may fuse them (the CPU backend adds and
  // normalizes each row where the products' threads quantize it).
  virtual absl::Status AddRmsNormMatMuls(float* x, const float* residual, const Weight& norm,
                                         int64_t n_tokens, float eps, float* h,
                                         const MatMulOut* outs, int n_outs) {
    const int64_t dim = norm.matrix().rows * norm.matrix().cols;
    if (residual != nullptr) {
      if (absl::Status s = Add(x, residual, n_tokens * dim); !s.ok()) return s;
    }
    if (absl::Status s = RmsNorm(x, norm, n_tokens, eps, h); !s.ok()) return s;
    return MatMuls(h, n_tokens, outs, n_outs);
  }
  // y (n_tokens, w.rows) = (silu(gate) * up) W^T, gate and up (n_tokens, w.cols); gate is
  // overwritten with silu(gate) * up. The same numbers as SwiGlu then MatMul, which is what the
  // default does; a backend may fuse the two (the CPU backend, as AddRmsNormMatMuls).
  virtual absl::Status SwiGluMatMul(const Weight& w, float* gate, const float* up,
                                    int64_t n_tokens, float* y) {
    if (absl::Status s = SwiGlu(gate, up, n_tokens * w.matrix().cols, gate); !s.ok()) return s;
    return MatMul(w, gate, n_tokens, y);
  }
  // y = x / sqrt(mean(x^2) + eps) * weight, per row of (n_tokens, dim). y may alias x.
  virtual absl::Status RmsNorm(const float* x, const Weight& weight, int64_t n_tokens, float eps,
                               float* y) = 0;
  // Rotates each head of x (n_tokens, n_heads * head_dim) in place at its token's position.
  virtual absl::Status Rope(float* x, int64_t n_tokens, int n_heads, const int32_t* positions,
                            const RopeParams& params) = 0;
  // out (n, dim) = silu(gate) * up.
  virtual absl::Status SwiGlu(const float* gate, const float* up, int64_t n_elems,
                              float* out) = 0;
  // dst (n_rows, dim) = rows `rows` of src (n, dim): picks the tokens whose logits are needed.
  virtual absl::Status GatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                                  int64_t dim, float* dst) = 0;
  // x += y, elementwise.
  virtual absl::Status Add(float* x, const float* y, int64_t n_elems) = 0;
  // Stores k, v (n_tokens, n_kv_heads * head_dim) of `layer` into the paged cache, then
  // computes causal grouped-query attention for q (n_tokens, n_heads * head_dim) into
  // out (n_tokens, n_heads * head_dim). Query head h uses KV head h / (n_heads / n_kv_heads).
  virtual absl::Status Attention(int layer, const float* q, const float* k, const float* v,
                                 int n_heads, const AttentionBatch& batch, float* out) = 0;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_BACKEND_H_
