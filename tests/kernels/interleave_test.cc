// The interleaved (Q4_0 / Q4_1) and striped (also Q8_0) layouts (kernels/quant/interleave.h) and
// everything that reads them: the layouts against their specification (restated here from the
// GGUF element order of q4.h), the round trips, and MatMulQ / MatMulQMany / CpuBackend / Engine
// giving the same bits from an interleaved or striped weight as from the GGUF one: every
// instruction set (the VNNI kernels read the layouts, the others GGUF copies), the row-dot,
// tiled and striped paths, batches on both sides of every threshold, 1-3 threads, block counts
// with and without a tail.
#include "kernels/quant/interleave.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/matmul.h"
#include "kernels/quant/q4.h"
#include "kernels/quant/types.h"
#include "kernels/tensor.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/common/tiny_llama.h"
#include "tests/kernels/matmul_testutil.h"

namespace tessera {
namespace {

constexpr GgmlType kTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1};
constexpr int64_t kBlockCounts[] = {1, 7, 8, 9, 12, 13, 16, 18, 22, 67};  // tails r = 0..7
constexpr int64_t kNoGemm = std::numeric_limits<int64_t>::max();

// Rows quantized by the reference quantizer, of different magnitudes.
std::vector<uint8_t> QuantizedRows(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
  const QuantTraits& t = *FindQuantTraits(type);
  const int64_t row_bytes = *RowBytes(t, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::exp2(static_cast<float>(r % 5) - 2.0f);
    for (float& v : row) v = normal(rng) * scale + (type == GgmlType::kQ4_1 ? 0.3f : 0.0f);
    t.quantize_ref(row.data(), out.data() + r * row_bytes, cols);
  }
  return out;
}

std::vector<uint8_t> InterleaveAll(GgmlType type, const std::vector<uint8_t>& gguf, int64_t rows,
                                   int64_t n_blocks) {
  const int64_t row_bytes = static_cast<int64_t>(gguf.size()) / rows;
  std::vector<uint8_t> out(gguf.size());
  for (int64_t r = 0; r < rows; ++r) {
    InterleaveRow(type, gguf.data() + r * row_bytes, n_blocks, out.data() + r * row_bytes);
  }
  return out;
}

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

// The code of element e of a GGUF Q4 block whose nibbles start at qs (q4.h's element order).
int Code(const uint8_t* qs, int e) { return e < 16 ? qs[e] & 0x0F : qs[e - 16] >> 4; }

TEST(InterleaveTest, GroupsFollowTheDocumentedLayout) {
  for (GgmlType type : kTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    const int scale_bytes = type == GgmlType::kQ4_1 ? 4 : 2;
    // Random bytes: every nibble and scale distinct enough to catch any misplacement.
    std::mt19937 rng(7);
    std::vector<uint8_t> gguf(static_cast<size_t>(9 * t.block_bytes));
    for (uint8_t& b : gguf) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> il(gguf.size());
    InterleaveRow(type, gguf.data(), 9, il.data());
    auto block = [&](int j) { return gguf.data() + j * t.block_bytes; };
    for (int c = 0; c < 2; ++c) {
      for (int k = 0; k < 64; ++k) {
        const uint8_t byte = il[64 * c + k];
        EXPECT_EQ(byte & 0x0F, Code(block(4 * c + k / 32) + scale_bytes, k % 32))
            << t.name << " chunk " << c << " byte " << k;
        EXPECT_EQ(byte >> 4, Code(block(4 * c + 2 + k / 32) + scale_bytes, k % 32))
            << t.name << " chunk " << c << " byte " << k;
      }
    }
    for (int j = 0; j < 8; ++j) {
      EXPECT_EQ(0, std::memcmp(&il[128 + 2 * j], block(j), 2)) << t.name << " d of block " << j;
      if (type == GgmlType::kQ4_1) {
        EXPECT_EQ(0, std::memcmp(&il[144 + 2 * j], block(j) + 2, 2)) << "m of block " << j;
      }
    }
    // The tail (block 8, r = 1): its nibbles, then its d (and m).
    const uint8_t* tail = &il[8 * t.block_bytes];
    EXPECT_EQ(0, std::memcmp(tail, block(8) + scale_bytes, 16)) << t.name;
    EXPECT_EQ(0, std::memcmp(tail + 16, block(8), scale_bytes)) << t.name;
  }
}

TEST(InterleaveTest, TailKeepsNibblesAndGathersTheScales) {
  for (GgmlType type : kTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    const int scale_bytes = type == GgmlType::kQ4_1 ? 4 : 2;
    constexpr int r = 5;  // a row of 8 + 5 blocks
    std::mt19937 rng(8);
    std::vector<uint8_t> gguf(static_cast<size_t>((8 + r) * t.block_bytes));
    for (uint8_t& b : gguf) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> il(gguf.size());
    InterleaveRow(type, gguf.data(), 8 + r, il.data());
    const uint8_t* tail = &il[8 * t.block_bytes];
    for (int j = 0; j < r; ++j) {
      const uint8_t* b = &gguf[(8 + j) * t.block_bytes];
      EXPECT_EQ(0, std::memcmp(tail + 16 * j, b + scale_bytes, 16)) << t.name << " " << j;
      EXPECT_EQ(0, std::memcmp(tail + 16 * r + 2 * j, b, 2)) << t.name << " d " << j;
      if (type == GgmlType::kQ4_1) {
        EXPECT_EQ(0, std::memcmp(tail + 18 * r + 2 * j, b + 2, 2)) << "m " << j;
      }
    }
  }
}

TEST(InterleaveTest, RoundTripIsExactAndDequantizesAsTheGgufRow) {
  for (GgmlType type : kTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (int64_t n_blocks : kBlockCounts) {
      const int64_t cols = n_blocks * 32, rows = 3;
      const std::vector<uint8_t> gguf = QuantizedRows(type, rows, cols, 11);
      const std::vector<uint8_t> il = InterleaveAll(type, gguf, rows, n_blocks);
      const int64_t row_bytes = *RowBytes(t, cols);
      std::vector<uint8_t> back(static_cast<size_t>(row_bytes));
      QuantMatrix m{type, rows, cols, row_bytes, il.data(), WeightLayout::kInterleaved8};
      std::vector<float> want(static_cast<size_t>(cols)), got(want.size());
      for (int64_t r = 0; r < rows; ++r) {
        DeinterleaveRow(type, il.data() + r * row_bytes, n_blocks, back.data());
        EXPECT_EQ(0, std::memcmp(back.data(), gguf.data() + r * row_bytes, back.size()))
            << t.name << " " << n_blocks << " blocks, row " << r;
        t.dequantize_ref(gguf.data() + r * row_bytes, want.data(), cols);
        DequantizeMatrixRow(m, r, got.data());
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
      }
    }
  }
}

std::vector<float> Activations(int64_t n, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (float& v : x) v = normal(rng);
  for (int64_t i = 0; i < n * cols; i += 97) x[i] *= 30.0f;  // outliers: cancellations
  return x;
}

// MatMulQ of w (another layout of the GGUF matrix wg) gives the same bits as wg on every
// instruction set, for each batch size and each threshold of the tiled path, with 1-3 threads.
void ExpectSameBitsAsGguf(const QuantMatrix& wg, const QuantMatrix& w, const std::vector<float>& x,
                          std::initializer_list<int64_t> batches,
                          std::initializer_list<int64_t> gemm_mins) {
  const int64_t n_blocks = wg.cols / FindQuantTraits(wg.type)->block_elems;
  for (CpuIsa isa : AvailableIsas()) {
    for (int64_t n_batch : batches) {
      for (int64_t gemm_min : gemm_mins) {
        const int threads = 1 + static_cast<int>(n_batch % 3);
        const std::vector<float> want = RunMatMul(wg, x, n_batch, threads, isa, gemm_min);
        const std::vector<float> got = RunMatMul(w, x, n_batch, threads, isa, gemm_min);
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
            << GgmlTypeName(wg.type) << " " << n_blocks << " blocks, batch " << n_batch << ", "
            << CpuIsaName(isa) << ", gemm from " << gemm_min << ", " << threads << " threads";
      }
    }
  }
}

TEST(InterleaveMatMulTest, SameBitsAsTheGgufLayoutOnEveryPath) {
  constexpr int64_t kRows = 37;  // three 16-row chunks and a partial one
  for (GgmlType type : kTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (int64_t n_blocks : kBlockCounts) {
      const int64_t cols = n_blocks * 32;
      const std::vector<uint8_t> gguf = QuantizedRows(type, kRows, cols, 5);
      const std::vector<uint8_t> il = InterleaveAll(type, gguf, kRows, n_blocks);
      const int64_t row_bytes = *RowBytes(t, cols);
      const QuantMatrix wg{type, kRows, cols, row_bytes, gguf.data()};
      const QuantMatrix wi{type, kRows, cols, row_bytes, il.data(), WeightLayout::kInterleaved8};
      ExpectSameBitsAsGguf(wg, wi, Activations(33, cols, 9), {1, 2, 3, 4, 5, 11, 12, 16, 33},
                           {1, kDefaultGemmMinBatch, kNoGemm});
    }
  }
}

TEST(InterleaveMatMulTest, MatMulQManyMixesLayouts) {
  const int64_t cols = 18 * 32, rows = 40;
  const std::vector<uint8_t> q40 = QuantizedRows(GgmlType::kQ4_0, rows, cols, 1);
  const std::vector<uint8_t> q41 = QuantizedRows(GgmlType::kQ4_1, rows, cols, 2);
  const std::vector<uint8_t> q40i = InterleaveAll(GgmlType::kQ4_0, q40, rows, 18);
  const int64_t rb40 = *RowBytes(*FindQuantTraits(GgmlType::kQ4_0), cols);
  const int64_t rb41 = *RowBytes(*FindQuantTraits(GgmlType::kQ4_1), cols);
  const QuantMatrix a{GgmlType::kQ4_0, rows, cols, rb40, q40i.data(), WeightLayout::kInterleaved8};
  const QuantMatrix b{GgmlType::kQ4_1, rows, cols, rb41, q41.data()};
  const QuantMatrix a_gguf{GgmlType::kQ4_0, rows, cols, rb40, q40.data()};
  for (int64_t n_batch : {1, 3, 16}) {
    const std::vector<float> x = Activations(n_batch, cols, 3);
    std::vector<float> ya(static_cast<size_t>(n_batch * rows)), yb(ya.size());
    const MatMulProduct products[] = {{&a, ya.data()}, {&b, yb.data()}};
    MatMulScratch scratch;
    ASSERT_TRUE(MatMulQMany(products, 2, x.data(), n_batch, TestPool(2), &scratch).ok());
    const CpuIsa isa = DetectCpuIsa();
    EXPECT_EQ(ya, RunMatMul(a_gguf, x, n_batch, 1, isa, kDefaultGemmMinBatch)) << n_batch;
    EXPECT_EQ(yb, RunMatMul(b, x, n_batch, 1, isa, kDefaultGemmMinBatch)) << n_batch;
  }
}

TEST(InterleaveMatMulTest, OtherTypesAndColumnSlicesAreRejected) {
  const int64_t cols = 256;
  std::vector<uint8_t> bytes(static_cast<size_t>(4 * 8 * 34));
  const QuantMatrix q8{GgmlType::kQ8_0, 4, cols, 8 * 34, bytes.data(),
                       WeightLayout::kInterleaved8};
  std::vector<float> x(cols, 1.0f), y(4);
  MatMulScratch scratch;
  const absl::Status st = MatMulQ(q8, x.data(), 1, y.data(), nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("interleaved"), std::string::npos) << st;

  const QuantMatrix q4{GgmlType::kQ4_0, 4, cols, 8 * 18, bytes.data(),
                       WeightLayout::kInterleaved8};
  const absl::StatusOr<QuantMatrix> cut = SliceMatrix(q4, 0, 4, 0, 128);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument) << cut.status();
  const absl::StatusOr<QuantMatrix> rows = SliceMatrix(q4, 1, 2, 0, cols);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->layout, WeightLayout::kInterleaved8);
  EXPECT_EQ(rows->data, q4.row(1));
}

bool VnniHere() {
  const CpuIsa isa = DetectCpuIsa();
  return isa == CpuIsa::kAvx512Vnni || isa == CpuIsa::kAmx;
}

TEST(InterleaveBackendTest, LoadWeightInterleavesWhereTheKernelsReadIt) {
  const int64_t rows = 24;
  for (GgmlType type : kTypes) {
    for (int64_t n_blocks : {int64_t{7}, int64_t{18}}) {
      const int64_t cols = n_blocks * 32;
      const std::vector<uint8_t> gguf = QuantizedRows(type, rows, cols, 21);
      const int64_t row_bytes = *RowBytes(*FindQuantTraits(type), cols);
      const QuantMatrix host{type, rows, cols, row_bytes, gguf.data()};
      CpuBackend fast(2), plain(2, /*exact_matmul=*/false, /*interleave=*/false);
      auto wf = fast.LoadWeight(host);
      auto wp = plain.LoadWeight(host);
      ASSERT_TRUE(wf.ok() && wp.ok());
      const bool expect = VnniHere() && n_blocks >= 8;
      EXPECT_EQ((*wf)->matrix().layout == WeightLayout::kInterleaved8, expect) << n_blocks;
      // Copied when interleaved, and into huge pages where the kernel offers them.
      const bool copied = expect || TransparentHugePagesAvailable();
      EXPECT_EQ((*wf)->device_bytes(), copied ? rows * row_bytes : 0);
      EXPECT_EQ((*wf)->matrix().data != gguf.data(), copied);
      EXPECT_EQ((*wp)->matrix().layout, WeightLayout::kGguf);
      EXPECT_EQ((*wp)->matrix().data, gguf.data());  // no copy
      // Products at batch 1, 5 and 20 (row-dot and tiled), and embedding rows: same bits.
      for (int64_t n : {1, 5, 20}) {
        const std::vector<float> x = Activations(n, cols, 4);
        std::vector<float> yf(static_cast<size_t>(n * rows)), yp(yf.size());
        ASSERT_TRUE(fast.MatMul(**wf, x.data(), n, yf.data()).ok());
        ASSERT_TRUE(plain.MatMul(**wp, x.data(), n, yp.data()).ok());
        EXPECT_EQ(yf, yp) << n;
      }
      const int32_t ids[] = {0, 17, 23, 5};
      std::vector<float> ef(4 * cols), ep(ef.size());
      ASSERT_TRUE(fast.Embed(**wf, ids, 4, ef.data()).ok());
      ASSERT_TRUE(plain.Embed(**wp, ids, 4, ep.data()).ok());
      EXPECT_EQ(ef, ep);
    }
  }
}

// A llama with 256-wide matrices (every projection interleaves or stripes) in Q4_0 and Q4_1:
// the engine's logits over a prefill and decode steps are the same bits in every layout.
TEST(InterleaveBackendTest, EngineLogitsAreTheSameBits) {
  ModelConfig c = testing_util::TinyLlamaConfig();
  c.n_embd = 256;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 32;
  c.n_rot = 32;
  c.n_ff = 512;
  for (GgmlType type : kTypes) {
    auto w = SyntheticWeights::Create(c, type, 3);
    ASSERT_TRUE(w.ok()) << w.status();
    // Striped where the CPU takes that layout, interleaved, GGUF.
    std::vector<float> logits[3];
    for (int i = 0; i < 3; ++i) {
      ScopedEnv stripes("TESSERA_CPU_STRIPES", i == 0 ? "1" : "0");
      CpuBackend backend(2, false, /*copy_weights=*/i < 2);
      EngineOptions opts;
      opts.kv_budget_bytes = 1 << 22;
      opts.kv_block_tokens = 4;
      auto e = Engine::Create(**w, ModelShard::Whole(c), &backend, nullptr, opts);
      ASSERT_TRUE(e.ok()) << e.status();
      std::vector<float> step;
      ASSERT_TRUE((*e)->Step({{1, {3, 1, 4, 1, 5, 9, 2, 6}, true}, {2, {7}, true}}, &step).ok());
      logits[i] = step;
      ASSERT_TRUE((*e)->Step({{1, {5}, true}, {2, {35}, true}}, &step).ok());
      logits[i].insert(logits[i].end(), step.begin(), step.end());
    }
    ASSERT_FALSE(logits[0].empty());
    EXPECT_EQ(logits[0], logits[2]) << GgmlTypeName(type);
    EXPECT_EQ(logits[1], logits[2]) << GgmlTypeName(type);
  }
}

// --- The striped layout.

constexpr GgmlType kStripeTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                                     GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

std::vector<uint8_t> StripeAll(GgmlType type, const std::vector<uint8_t>& gguf, int64_t rows,
                               int64_t n_blocks) {
  const int64_t row_bytes = static_cast<int64_t>(gguf.size()) / rows;
  std::vector<uint8_t> out(gguf.size());
  for (int64_t r = 0; r < rows; r += kStripeRows) {
    StripeRows(type, gguf.data() + r * row_bytes, row_bytes, n_blocks, out.data() + r * row_bytes);
  }
  return out;
}

TEST(StripeTest, UnitsFollowTheDocumentedLayoutInChainOrder) {
  constexpr int64_t kBlocks = 19;  // chains of 3, 3, 3, 2, 2, 2, 2, 2 blocks
  // The chain order written out: chain c = blocks c, c + 8, ..., chain after chain.
  std::vector<int64_t> order;
  for (int c = 0; c < 8; ++c) {
    for (int64_t k = c; k < kBlocks; k += 8) order.push_back(k);
  }
  for (int64_t slot = 0; slot < kBlocks; ++slot) {
    EXPECT_EQ(StripeSlot(order[slot], kBlocks), slot) << "block " << order[slot];
  }
  for (GgmlType type : kStripeTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    // The fp16 fields at the block's start: d (Q4_1: and m; Q4_K: and dmin); the rest,
    // Q4_K's packed scales included, is code chunks. Q6_K: codes and scales, then d.
    const bool two_fields =
        type == GgmlType::kQ4_1 || type == GgmlType::kQ4_K || type == GgmlType::kQ5_K;
    const bool fields_last = type == GgmlType::kQ6_K;
    const int scale_bytes = two_fields ? 4 : 2;
    const int code_bytes = static_cast<int>(t.block_bytes) - scale_bytes;  // 16 .. 208
    const int code_start = fields_last ? 0 : scale_bytes;
    const int field_start = fields_last ? code_bytes : 0;
    const int64_t row_bytes = kBlocks * t.block_bytes;
    std::mt19937 rng(17);
    std::vector<uint8_t> gguf(static_cast<size_t>(kStripeRows * row_bytes));
    for (uint8_t& b : gguf) b = static_cast<uint8_t>(rng());
    const std::vector<uint8_t> st = StripeAll(type, gguf, kStripeRows, kBlocks);
    const int64_t unit_bytes = kStripeRows * t.block_bytes;
    for (int64_t k = 0; k < kBlocks; ++k) {
      const uint8_t* unit = st.data() + StripeSlot(k, kBlocks) * unit_bytes;
      for (int i = 0; i < kStripeRows; ++i) {
        const uint8_t* block = gguf.data() + i * row_bytes + k * t.block_bytes;
        for (int c = 0; c < code_bytes / 4; ++c) {
          EXPECT_EQ(0, std::memcmp(unit + 64 * StripeChunk(type, c) + 4 * i,
                                   block + code_start + 4 * c, 4))
              << t.name << " block " << k << " row " << i << " chunk " << c;
        }
        const uint8_t* d = unit + 16 * code_bytes;  // 256, 512, 2240 or 3328
        EXPECT_EQ(0, std::memcmp(d + 2 * i, block + field_start, 2)) << t.name << " d, row " << i;
        if (two_fields) {
          EXPECT_EQ(0, std::memcmp(d + 32 + 2 * i, block + 2, 2)) << "m, row " << i;
        }
      }
    }
  }
}

TEST(StripeTest, RoundTripIsExactAndDequantizesAsTheGgufRow) {
  for (GgmlType type : kStripeTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (int64_t n_blocks : kBlockCounts) {
      const int64_t cols = n_blocks * t.block_elems, rows = 2 * kStripeRows;
      const std::vector<uint8_t> gguf = QuantizedRows(type, rows, cols, 12);
      const std::vector<uint8_t> st = StripeAll(type, gguf, rows, n_blocks);
      const int64_t row_bytes = *RowBytes(t, cols);
      const QuantMatrix m{type, rows, cols, row_bytes, st.data(), WeightLayout::kStripes16};
      std::vector<uint8_t> back(static_cast<size_t>(row_bytes));
      std::vector<float> want(static_cast<size_t>(cols)), got(want.size());
      for (int64_t r = 0; r < rows; ++r) {
        ReadGgufRow(m, r, back.data());
        EXPECT_EQ(0, std::memcmp(back.data(), gguf.data() + r * row_bytes, back.size()))
            << t.name << " " << n_blocks << " blocks, row " << r;
        t.dequantize_ref(gguf.data() + r * row_bytes, want.data(), cols);
        DequantizeMatrixRow(m, r, got.data());
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
      }
    }
  }
}

TEST(StripeTest, WholeStripeConversionsGiveTheGgufRows) {
  for (GgmlType type : kStripeTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (int64_t n_blocks : {int64_t{1}, int64_t{9}, int64_t{22}}) {
      const int64_t cols = n_blocks * t.block_elems;
      const std::vector<uint8_t> gguf = QuantizedRows(type, kStripeRows, cols, 31);
      const std::vector<uint8_t> st = StripeAll(type, gguf, kStripeRows, n_blocks);
      const int64_t row_bytes = *RowBytes(t, cols), stride = row_bytes + 7;  // rows apart
      std::vector<uint8_t> back(static_cast<size_t>(kStripeRows * stride));
      auto expect_rows = [&](const char* what) {
        for (int i = 0; i < kStripeRows; ++i) {
          EXPECT_EQ(0, std::memcmp(back.data() + i * stride, gguf.data() + i * row_bytes,
                                   static_cast<size_t>(row_bytes)))
              << what << " " << t.name << " " << n_blocks << " blocks, row " << i;
        }
      };
      UnstripeRows(type, st.data(), n_blocks, back.data(), stride);
      expect_rows("UnstripeRows");
      if (CpuIsaAvailable(CpuIsa::kAvx512Vnni)) {  // compiled with the VNNI file's flags
        std::fill(back.begin(), back.end(), uint8_t{0});
        UnstripeRowsAvx512(type, st.data(), n_blocks, back.data(), stride);
        expect_rows("UnstripeRowsAvx512");
      }
    }
  }
}

TEST(StripeMatMulTest, SameBitsAsTheGgufLayoutOnEveryPath) {
  constexpr int64_t kRows = 3 * kStripeRows;
  for (GgmlType type : kStripeTypes) {
    const QuantTraits& t = *FindQuantTraits(type);
    for (int64_t n_blocks : kBlockCounts) {
      const int64_t cols = n_blocks * t.block_elems;
      const std::vector<uint8_t> gguf = QuantizedRows(type, kRows, cols, 6);
      const std::vector<uint8_t> st = StripeAll(type, gguf, kRows, n_blocks);
      const int64_t row_bytes = *RowBytes(t, cols);
      const QuantMatrix wg{type, kRows, cols, row_bytes, gguf.data()};
      const QuantMatrix ws{type, kRows, cols, row_bytes, st.data(), WeightLayout::kStripes16};
      // 50 sequences: striped Q6_K takes the tiled kernel on converted rows from 49 on.
      ExpectSameBitsAsGguf(wg, ws, Activations(50, cols, 10),
                           {1, 2, 3, 4, 5, 8, 9, 12, 16, 17, 33, 50}, {1, kNoGemm});
    }
  }
}

TEST(StripeMatMulTest, PartialStripesAreRejected) {
  const int64_t cols = 256, row_bytes = 8 * 18;
  std::vector<uint8_t> bytes(static_cast<size_t>(48 * row_bytes));
  const QuantMatrix odd{GgmlType::kQ4_0, 40, cols, row_bytes, bytes.data(),
                        WeightLayout::kStripes16};
  std::vector<float> x(cols, 1.0f), y(40);
  MatMulScratch scratch;
  const absl::Status st = MatMulQ(odd, x.data(), 1, y.data(), nullptr, &scratch);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("whole stripes of 16 rows, not 40"), std::string::npos) << st;

  const QuantMatrix m{GgmlType::kQ4_0, 48, cols, row_bytes, bytes.data(),
                      WeightLayout::kStripes16};
  EXPECT_EQ(SliceMatrix(m, 8, 16, 0, cols).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SliceMatrix(m, 16, 8, 0, cols).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SliceMatrix(m, 0, 16, 0, 128).status().code(), absl::StatusCode::kInvalidArgument);
  const absl::StatusOr<QuantMatrix> rows = SliceMatrix(m, 16, 32, 0, cols);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->layout, WeightLayout::kStripes16);
  EXPECT_EQ(rows->data, m.row(16));
}

TEST(StripeBackendTest, LoadWeightStripesWholeStripesOnVnniWithoutAmx) {
  const bool stripes_here = DetectCpuIsa() == CpuIsa::kAvx512Vnni;
  for (GgmlType type : kStripeTypes) {
    for (int64_t rows : {int64_t{32}, int64_t{24}}) {
      const int64_t n_blocks = 9, cols = n_blocks * FindQuantTraits(type)->block_elems;
      const std::vector<uint8_t> gguf = QuantizedRows(type, rows, cols, 22);
      const int64_t row_bytes = *RowBytes(*FindQuantTraits(type), cols);
      const QuantMatrix host{type, rows, cols, row_bytes, gguf.data()};
      CpuBackend plain(2, /*exact_matmul=*/false, /*copy_weights=*/false);
      auto wp = plain.LoadWeight(host);
      ASSERT_TRUE(wp.ok());
      for (const char* env : {"1", "0"}) {
        ScopedEnv scoped("TESSERA_CPU_STRIPES", env);
        CpuBackend fast(2);
        auto wf = fast.LoadWeight(host);
        ASSERT_TRUE(wf.ok());
        const WeightLayout want =
            stripes_here && rows % 16 == 0 && env[0] == '1' ? WeightLayout::kStripes16
            : VnniHere() && InterleaveSupported(type)       ? WeightLayout::kInterleaved8
                                                            : WeightLayout::kGguf;
        EXPECT_EQ((*wf)->matrix().layout, want) << rows << " rows, TESSERA_CPU_STRIPES=" << env;
        for (int64_t n : {1, 3, 8, 16, 20}) {
          const std::vector<float> x = Activations(n, cols, 5);
          std::vector<float> yf(static_cast<size_t>(n * rows)), yp(yf.size());
          ASSERT_TRUE(fast.MatMul(**wf, x.data(), n, yf.data()).ok());
          ASSERT_TRUE(plain.MatMul(**wp, x.data(), n, yp.data()).ok());
          EXPECT_EQ(yf, yp) << n;
        }
        const int32_t ids[] = {0, 17, 23, 5, 16};
        std::vector<float> ef(5 * cols), ep(ef.size());
        ASSERT_TRUE(fast.Embed(**wf, ids, 5, ef.data()).ok());
        ASSERT_TRUE(plain.Embed(**wp, ids, 5, ep.data()).ok());
        EXPECT_EQ(ef, ep);
      }
    }
  }
}

}  // namespace
}  // namespace tessera
