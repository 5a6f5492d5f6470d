#include "kernels/quant/interleave.h"

#include <cstring>
#include <vector>

#include "kernels/quant/q4.h"

namespace tessera {
namespace {

// Bytes of a block's fp16 fields at its start (Q4_1: d, m; Q4_K, Q5_K: d, dmin).
int ScaleBytes(GgmlType type) {
  return type == GgmlType::kQ4_1 || type == GgmlType::kQ4_K || type == GgmlType::kQ5_K ? 4 : 2;
}

// One group of eight blocks (`blocks`, GGUF, block_bytes apart) <-> its interleaved form.
// The code of element e of a GGUF block is the low nibble of qs[e] (e < 16) or the high
// nibble of qs[e - 16]; in a chunk byte, the low nibble is block 4c + k / 32 and the high
// nibble block 4c + 2 + k / 32, element k mod 32 of both (interleave.h).
void InterleaveGroup(const uint8_t* blocks, int block_bytes, int scale_bytes, uint8_t* group) {
  for (int c = 0; c < 2; ++c) {
    for (int half = 0; half < 2; ++half) {  // k / 32
      const uint8_t* lo = blocks + (4 * c + half) * block_bytes + scale_bytes;      // its qs
      const uint8_t* hi = blocks + (4 * c + 2 + half) * block_bytes + scale_bytes;  // its qs
      uint8_t* out = group + 64 * c + 32 * half;
      for (int e = 0; e < 16; ++e) {
        out[e] = static_cast<uint8_t>((lo[e] & 0x0F) | (hi[e] << 4));
        out[16 + e] = static_cast<uint8_t>((lo[e] >> 4) | (hi[e] & 0xF0));
      }
    }
  }
  for (int j = 0; j < kInterleaveBlocks; ++j) {
    for (int f = 0; f < scale_bytes / 2; ++f) {  // d, then m
      std::memcpy(group + kInterleavedCodeBytes + 16 * f + 2 * j, blocks + j * block_bytes + 2 * f, 2);
    }
  }
}

void DeinterleaveGroup(const uint8_t* group, int block_bytes, int scale_bytes, uint8_t* blocks) {
  for (int c = 0; c < 2; ++c) {
    for (int half = 0; half < 2; ++half) {
      uint8_t* lo = blocks + (4 * c + half) * block_bytes + scale_bytes;
      uint8_t* hi = blocks + (4 * c + 2 + half) * block_bytes + scale_bytes;
      const uint8_t* in = group + 64 * c + 32 * half;
      for (int e = 0; e < 16; ++e) {
        lo[e] = static_cast<uint8_t>((in[e] & 0x0F) | (in[16 + e] << 4));
        hi[e] = static_cast<uint8_t>((in[e] >> 4) | (in[16 + e] & 0xF0));
      }
    }
  }
  for (int j = 0; j < kInterleaveBlocks; ++j) {
    for (int f = 0; f < scale_bytes / 2; ++f) {
      std::memcpy(blocks + j * block_bytes + 2 * f, group + kInterleavedCodeBytes + 16 * f + 2 * j, 2);
    }
  }
}

// The tail's r < 8 blocks <-> their interleaved form (nibbles at 16 j, then the fields).
void InterleaveTail(const uint8_t* blocks, int r, int block_bytes, int scale_bytes,
                    uint8_t* tail) {
  for (int j = 0; j < r; ++j) {
    const uint8_t* b = blocks + j * block_bytes;
    std::memcpy(tail + 16 * j, b + scale_bytes, 16);
    for (int f = 0; f < scale_bytes / 2; ++f) std::memcpy(tail + 16 * r + 2 * (f * r + j), b + 2 * f, 2);
  }
}

void DeinterleaveTail(const uint8_t* tail, int r, int block_bytes, int scale_bytes,
                      uint8_t* blocks) {
  for (int j = 0; j < r; ++j) {
    uint8_t* b = blocks + j * block_bytes;
    std::memcpy(b + scale_bytes, tail + 16 * j, 16);
    for (int f = 0; f < scale_bytes / 2; ++f) std::memcpy(b + 2 * f, tail + 16 * r + 2 * (f * r + j), 2);
  }
}

template <bool kToInterleaved>
void ConvertRow(GgmlType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst) {
  const int block_bytes = static_cast<int>(FindQuantTraits(type)->block_bytes);
  const int scale_bytes = ScaleBytes(type);
  const int64_t group_bytes = int64_t{kInterleaveBlocks} * block_bytes;
  const int64_t n_groups = n_blocks / kInterleaveBlocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    if constexpr (kToInterleaved) {
      InterleaveGroup(src + g * group_bytes, block_bytes, scale_bytes, dst + g * group_bytes);
    } else {
      DeinterleaveGroup(src + g * group_bytes, block_bytes, scale_bytes, dst + g * group_bytes);
    }
  }
  const int64_t done = n_groups * group_bytes;
  const int r = static_cast<int>(n_blocks - n_groups * kInterleaveBlocks);
  if constexpr (kToInterleaved) {
    InterleaveTail(src + done, r, block_bytes, scale_bytes, dst + done);
  } else {
    DeinterleaveTail(src + done, r, block_bytes, scale_bytes, dst + done);
  }
}

}  // namespace

bool InterleaveSupported(GgmlType type) {
  return type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1;
}

bool StripeSupported(GgmlType type) {
  return InterleaveSupported(type) || type == GgmlType::kQ8_0 || type == GgmlType::kQ4_K ||
         type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
}

int StripeCodeBytes(GgmlType type) {
  return kStripeRows * (static_cast<int>(FindQuantTraits(type)->block_bytes) - ScaleBytes(type));
}

void InterleaveRow(GgmlType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst) {
  ConvertRow<true>(type, src, n_blocks, dst);
}

void DeinterleaveRow(GgmlType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst) {
  ConvertRow<false>(type, src, n_blocks, dst);
}

StripeBlockLayout GetStripeBlockLayout(GgmlType type) {
  const int block_bytes = static_cast<int>(FindQuantTraits(type)->block_bytes);
  const int scale_bytes = ScaleBytes(type);
  const int code_bytes = block_bytes - scale_bytes;
  const bool fields_last = type == GgmlType::kQ6_K;
  return {block_bytes, fields_last ? 0 : scale_bytes, code_bytes / 4,
          fields_last ? code_bytes : 0, scale_bytes / 2};
}

int StripeChunk(GgmlType type, int c) {
  if (type != GgmlType::kQ6_K) return c;
  if (c >= 48) return c - 48;  // the scales first
  // ql bytes 4 c' of half h = c' / 16 are chunk column c' % 8 of A (c' % 16 < 8) or B; qh
  // bytes 4 c' of half h = c' / 8 are column c' % 8 of H. Group (h, column / 4) holds its
  // columns' A, then B, then H chunks.
  const bool ql = c < 32;
  const int h = ql ? c / 16 : (c - 32) / 8;
  const int col = ql ? c % 8 : (c - 32) % 8;
  const int part = ql ? (c % 16) / 8 : 2;  // A, B, H
  return 4 + 12 * (2 * h + col / 4) + 4 * part + col % 4;
}

int64_t StripeSlot(int64_t k, int64_t n_blocks) {
  // Chains 0 .. c - 1 hold (n_blocks - i + 7) / 8 blocks each.
  const int64_t c = k % 8;
  int64_t slot = k / 8;
  for (int64_t i = 0; i < c; ++i) slot += (n_blocks - i + 7) / 8;
  return slot;
}

namespace {

// Where a row's bytes go in a stripe: fn(stripe_offset, row_offset, bytes) for each piece of
// each block k of the row, stripe_offset being row 0's (row i's is bytes * i further on): code
// bytes 4 c .. 4 c + 3 to 64 StripeChunk(c) + 4 i of k's unit, the fp16 field f (d = 0, m or
// dmin = 1) to StripeCodeBytes + 32 f + 2 i. Every supported block is its fp16 field(s), then
// its codes (the k-quants' packed scales and qh count as codes), except Q6_K: its codes and
// int8 scales, then d.
template <typename Fn>
void ForEachStripePiece(GgmlType type, int64_t n_blocks, Fn fn) {
  const StripeBlockLayout b = GetStripeBlockLayout(type);
  const int64_t unit_bytes = int64_t{kStripeRows} * b.block_bytes;
  for (int64_t k = 0; k < n_blocks; ++k) {
    const int64_t unit = StripeSlot(k, n_blocks) * unit_bytes;
    const int64_t block = k * b.block_bytes;
    for (int c = 0; c < b.code_pieces; ++c) {
      fn(unit + 64 * StripeChunk(type, c), block + b.code_start + 4 * c, 4);
    }
    for (int f = 0; f < b.fields; ++f) {
      fn(unit + kStripeRows * 4 * b.code_pieces + 32 * f, block + b.field_start + 2 * f, 2);
    }
  }
}

}  // namespace

void StripeRows(GgmlType type, const uint8_t* src, int64_t src_stride, int64_t n_blocks,
                uint8_t* dst) {
  ForEachStripePiece(type, n_blocks, [&](int64_t at, int64_t from, int n) {
    for (int i = 0; i < kStripeRows; ++i) {
      std::memcpy(dst + at + n * i, src + i * src_stride + from, static_cast<size_t>(n));
    }
  });
}

void UnstripeRow(GgmlType type, const uint8_t* stripe, int64_t n_blocks, int i, uint8_t* dst) {
  ForEachStripePiece(type, n_blocks, [&](int64_t from, int64_t at, int n) {
    std::memcpy(dst + at, stripe + from + n * i, static_cast<size_t>(n));
  });
}

void UnstripeRows(GgmlType type, const uint8_t* stripe, int64_t n_blocks, uint8_t* dst,
                  int64_t dst_stride) {
  // Fixed-size copies (4-byte code pieces, 2-byte fields), which compile to moves: the tiled
  // kernels' path for striped weights converts every row of a large batch's matrices.
  ForEachStripePiece(type, n_blocks, [&](int64_t from, int64_t at, int n) {
    const uint8_t* src = stripe + from;
    uint8_t* out = dst + at;
    if (n == 4) {
      for (int i = 0; i < kStripeRows; ++i) std::memcpy(out + i * dst_stride, src + 4 * i, 4);
    } else {
      for (int i = 0; i < kStripeRows; ++i) std::memcpy(out + i * dst_stride, src + 2 * i, 2);
    }
  });
}

void ReadGgufRow(const QuantMatrix& m, int64_t r, uint8_t* dst) {
  const QuantTraits* traits = FindQuantTraits(m.type);
  const int64_t n_blocks = m.cols / traits->block_elems;
  switch (m.layout) {
    case WeightLayout::kGguf:
      std::memcpy(dst, m.row(r), static_cast<size_t>(n_blocks * traits->block_bytes));
      return;
    case WeightLayout::kInterleaved8:
      DeinterleaveRow(m.type, m.row(r), n_blocks, dst);
      return;
    case WeightLayout::kStripes16:
      UnstripeRow(m.type, m.row(r - r % kStripeRows), n_blocks, static_cast<int>(r % kStripeRows),
                  dst);
      return;
  }
}

void DequantizeMatrixRow(const QuantMatrix& m, int64_t r, float* out) {
  const QuantTraits* traits = FindQuantTraits(m.type);
  if (m.layout == WeightLayout::kGguf) {
    traits->dequantize_ref(m.row(r), out, m.cols);
    return;
  }
  const int64_t n_blocks = m.cols / traits->block_elems;
  thread_local std::vector<uint8_t> row;
  row.resize(static_cast<size_t>(n_blocks * traits->block_bytes));
  ReadGgufRow(m, r, row.data());
  traits->dequantize_ref(row.data(), out, m.cols);
}

}  // namespace tessera
