// PackGemmPanels: ActRow32 rows -> the 16-row panels of the tiled kernels (gemm_kernels.h).
#include <cstring>

#include "kernels/cpu/act_quant.h"
#include "kernels/cpu/gemm_kernels.h"

namespace tessera {

int64_t GemmPanelBytes(int64_t n_batch, int64_t n_blocks) {
  const int64_t n_panels = (n_batch + kGemmPanelRows - 1) / kGemmPanelRows;
  return n_panels * n_blocks * kGemmPanelBlockBytes;
}

void PackGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                    uint8_t* panels) {
  const int64_t n_panels = (n_batch + kGemmPanelRows - 1) / kGemmPanelRows;
  for (int64_t p = 0; p < n_panels; ++p) {
    uint8_t* base = panels + p * n_blocks * kGemmPanelBlockBytes;
    for (int j = 0; j < kGemmPanelRows; ++j) {
      const int64_t b = p * kGemmPanelRows + j;
      if (b >= n_batch) {  // padding lane: codes 0 (stored as 128), scales 0
        for (int64_t k = 0; k < n_blocks; ++k) {
          uint8_t* blk = base + ChainSlot(k, n_blocks) * kGemmPanelBlockBytes;
          for (int g = 0; g < 8; ++g) std::memset(blk + 64 * g + 4 * j, 0x80, 4);
          const float zero = 0.0f;
          std::memcpy(blk + 512 + 4 * j, &zero, 4);
          std::memcpy(blk + 576 + 4 * j, &zero, 4);
        }
        continue;
      }
      const ActRow32 a = ViewActRow32(act + b * act_stride, n_blocks);
      for (int64_t k = 0; k < n_blocks; ++k) {
        uint8_t* blk = base + ChainSlot(k, n_blocks) * kGemmPanelBlockBytes;
        for (int g = 0; g < 8; ++g) {
          uint32_t v;
          std::memcpy(&v, a.qs + 32 * k + 4 * g, 4);
          v ^= 0x80808080u;  // int8 a -> uint8 a + 128, byte by byte
          std::memcpy(blk + 64 * g + 4 * j, &v, 4);
        }
        std::memcpy(blk + 512 + 4 * j, a.d + k, 4);
        std::memcpy(blk + 576 + 4 * j, a.ds + k, 4);
      }
    }
  }
}

int64_t KGemmPanelBytes(int64_t n_batch, int64_t n_blocks) {
  const int64_t n_panels = (n_batch + kGemmPanelRows - 1) / kGemmPanelRows;
  return n_panels * n_blocks * kKGemmPanelBlockBytes;
}

void PackKGemmPanels(const uint8_t* act, int64_t act_stride, int64_t n_batch, int64_t n_blocks,
                     uint8_t* panels) {
  const int64_t n_panels = (n_batch + kGemmPanelRows - 1) / kGemmPanelRows;
  for (int64_t p = 0; p < n_panels; ++p) {
    uint8_t* base = panels + p * n_blocks * kKGemmPanelBlockBytes;
    for (int j = 0; j < kGemmPanelRows; ++j) {
      const int64_t b = p * kGemmPanelRows + j;
      const auto* row = reinterpret_cast<const ActBlock256*>(act + b * act_stride);
      for (int64_t k = 0; k < n_blocks; ++k) {
        uint8_t* blk = base + ChainSlot(k, n_blocks) * kKGemmPanelBlockBytes;
        if (b >= n_batch) {  // padding lane: codes 0 (stored as 128), scale 0, sums 0
          for (int g = 0; g < 64; ++g) std::memset(blk + 64 * g + 4 * j, 0x80, 4);
          std::memset(blk + 4096 + 4 * j, 0, 4);
          for (int i = 0; i < 8; ++i) std::memset(blk + 4160 + 64 * i + 4 * j, 0, 4);
          continue;
        }
        const ActBlock256& a = row[k];
        for (int g = 0; g < 64; ++g) {
          uint32_t v;
          std::memcpy(&v, a.qs + 4 * g, 4);
          v ^= 0x80808080u;  // int8 a -> uint8 a + 128, byte by byte
          std::memcpy(blk + 64 * g + 4 * j, &v, 4);
        }
        std::memcpy(blk + 4096 + 4 * j, &a.d, 4);
        for (int i = 0; i < 8; ++i) std::memcpy(blk + 4160 + 64 * i + 4 * j, a.bsums + 2 * i, 4);
      }
    }
  }
}

}  // namespace tessera
