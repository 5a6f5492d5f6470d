// PackGemmPanels / PackKGemmPanels: ActRow32 / ActBlock256 rows -> the 16-row panels of the
// tiled kernels (gemm_kernels.h).
#include <cstring>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/gemm_kernels.h"

namespace tessera {

namespace {

int64_t NumPanels(int64_t n_batch) { return (n_batch + kGemmPanelRows - 1) / kGemmPanelRows; }

// Calls fill(b, j, block) for every lane j of every panel: b is the activation row of the lane
// (>= n_batch for a padding lane), block(k) the bytes of block k in its panel (chain-major
// order, block_bytes per block).
template <typename Fill>
void ForEachLane(int64_t n_batch, int64_t n_blocks, int64_t block_bytes, uint8_t* panels,
                 Fill fill) {
  for (int64_t p = 0; p < NumPanels(n_batch); ++p) {
    uint8_t* base = panels + p * n_blocks * block_bytes;
    auto block = [&](int64_t k) { return base + ChainSlot(k, n_blocks) * block_bytes; };
    for (int j = 0; j < kGemmPanelRows; ++j) fill(p * kGemmPanelRows + j, j, block);
  }
}

// Lane j of n_groups 64-byte code groups: group g gets bytes qs[4g .. 4g + 3] + 128 (int8 a ->
// uint8 a + 128, byte by byte), or 128 (code 0) for a padding lane (qs null).
void PutCodes(const int8_t* qs, int n_groups, int j, uint8_t* blk) {
  for (int g = 0; g < n_groups; ++g) {
    uint32_t v = 0;
    if (qs != nullptr) std::memcpy(&v, qs + 4 * g, 4);
    v ^= 0x80808080u;
    std::memcpy(blk + 64 * g + 4 * j, &v, 4);
  }
}

}  // namespace

int64_t GemmPanelBytes(int64_t n_batch, int64_t n_blocks) {
  return NumPanels(n_batch) * n_blocks * kGemmPanelBlockBytes;
}

void PackGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                    uint8_t* panels) {
  ForEachLane(n_batch, n_blocks, kGemmPanelBlockBytes, panels, [&](int64_t b, int j, auto block) {
    const float zero = 0.0f;
    if (b >= n_batch) {  // padding lane: codes 0, scales 0
      for (int64_t k = 0; k < n_blocks; ++k) {
        PutCodes(nullptr, 8, j, block(k));
        std::memcpy(block(k) + 512 + 4 * j, &zero, 4);
        std::memcpy(block(k) + 576 + 4 * j, &zero, 4);
      }
      return;
    }
    const ActRow32 a = ViewActRow32(act + b * act_stride, n_blocks);
    for (int64_t k = 0; k < n_blocks; ++k) {
      uint8_t* blk = block(k);
      PutCodes(a.qs + 32 * k, 8, j, blk);
      std::memcpy(blk + 512 + 4 * j, a.d + k, 4);
      std::memcpy(blk + 576 + 4 * j, a.ds + k, 4);
    }
  });
}

int64_t KGemmPanelBytes(int64_t n_batch, int64_t n_blocks) {
  return NumPanels(n_batch) * n_blocks * kKGemmPanelBlockBytes;
}

void PackKGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                     uint8_t* panels) {
  ForEachLane(n_batch, n_blocks, kKGemmPanelBlockBytes, panels, [&](int64_t b, int j, auto block) {
    const auto* row = reinterpret_cast<const ActBlock256*>(act + b * act_stride);
    for (int64_t k = 0; k < n_blocks; ++k) {
      uint8_t* blk = block(k);
      if (b >= n_batch) {  // padding lane: codes 0, scale 0, sums 0
        PutCodes(nullptr, 64, j, blk);
        std::memset(blk + 4096 + 4 * j, 0, 4);
        for (int i = 0; i < 8; ++i) std::memset(blk + 4160 + 64 * i + 4 * j, 0, 4);
        continue;
      }
      PutCodes(row[k].qs, 64, j, blk);
      std::memcpy(blk + 4096 + 4 * j, &row[k].d, 4);
      for (int i = 0; i < 8; ++i) std::memcpy(blk + 4160 + 64 * i + 4 * j, row[k].bsums + 2 * i, 4);
    }
  });
}

}  // namespace tessera
