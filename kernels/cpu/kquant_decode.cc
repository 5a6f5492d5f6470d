#include "kernels/cpu/kquant_decode.h"

#include <cstring>

#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"

namespace tessera {
namespace {

// Q2_K: per 128-element half h, byte qs[32 h + l] holds elements 128 h + 32 s + l (l < 32)
// in bits 2s..2s+1; sub-block of 16 = element / 16; scales[j] = sc | m << 4.
void DecodeQ2_K(const BlockQ2_K& b, KDecoded* out) {
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      for (int l = 0; l < 32; ++l) {
        out->q[128 * h + 32 * s + l] = static_cast<int8_t>((b.qs[32 * h + l] >> (2 * s)) & 3);
      }
    }
  }
  for (int j = 0; j < 16; ++j) {
    out->sc[j] = b.scales[j] & 0xF;
    out->m[j] = b.scales[j] >> 4;
  }
  out->d = Fp16ToFloat(b.d);
  out->dmin = Fp16ToFloat(b.dmin);
}

// Q3_K: like Q2_K for the low two bits; bit (4 h + s) of hmask[l] is the high bit of element
// 128 h + 32 s + l, and a clear high bit means "minus 4". 6-bit scales, offset 32: low nibble
// of scales[j] (j < 8) or high nibble of scales[j - 8], top two bits from scales[8 + j % 4]
// at bit 2 * (j / 4).
void DecodeQ3_K(const BlockQ3_K& b, KDecoded* out) {
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      for (int l = 0; l < 32; ++l) {
        const int low = (b.qs[32 * h + l] >> (2 * s)) & 3;
        const int high = (b.hmask[l] >> (4 * h + s)) & 1;
        out->q[128 * h + 32 * s + l] = static_cast<int8_t>(low - (high ? 0 : 4));
      }
    }
  }
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (b.scales[j] & 0xF) : (b.scales[j - 8] >> 4);
    const int high = (b.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    out->sc[j] = (low | high << 4) - 32;
    out->m[j] = 0;
  }
  out->d = Fp16ToFloat(b.d);
}

// Q4_K: byte qs[32 p + l] holds element 64 p + l (low nibble) and 64 p + 32 + l (high
// nibble); sub-blocks of 32 (8 of them), stored as pairs of 16 with the same scale. The
// fields are Q4_K's and Q5_K's alike (Q5_K adds qh), hence the template.
template <typename Block>
void DecodeNibblesK4(const Block& b, KDecoded* out) {
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      out->q[64 * p + l] = static_cast<int8_t>(b.qs[32 * p + l] & 0xF);
      out->q[64 * p + 32 + l] = static_cast<int8_t>(b.qs[32 * p + l] >> 4);
    }
  }
  for (int j = 0; j < 8; ++j) {
    ScaleMinK4(b.scales, j, &out->sc[2 * j], &out->m[2 * j]);
    out->sc[2 * j + 1] = out->sc[2 * j];
    out->m[2 * j + 1] = out->m[2 * j];
  }
  out->d = Fp16ToFloat(b.d);
  out->dmin = Fp16ToFloat(b.dmin);
}

void DecodeQ4_K(const BlockQ4_K& b, KDecoded* out) { DecodeNibblesK4(b, out); }

// Q5_K: Q4_K plus bit (2 p) of qh[l] as bit 4 of element 64 p + l, and bit (2 p + 1) as bit 4
// of element 64 p + 32 + l.
void DecodeQ5_K(const BlockQ5_K& b, KDecoded* out) {
  DecodeNibblesK4(b, out);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      out->q[64 * p + l] |= static_cast<int8_t>(((b.qh[l] >> (2 * p)) & 1) << 4);
      out->q[64 * p + 32 + l] |= static_cast<int8_t>(((b.qh[l] >> (2 * p + 1)) & 1) << 4);
    }
  }
}

// Q6_K: per 128-element half h, for l < 32: ql[64 h + l] low nibble -> element 128 h + l,
// ql[64 h + 32 + l] low -> + 32, ql[64 h + l] high -> + 64, ql[64 h + 32 + l] high -> + 96;
// the top two bits of those four come from qh[32 h + l] bits 0-1, 2-3, 4-5, 6-7. Codes are
// offset by 32; int8 scales per 16 elements.
void DecodeQ6_K(const BlockQ6_K& b, KDecoded* out) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    int8_t* q = out->q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<int8_t>(((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32);
      q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32);
      q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
      q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
    }
  }
  for (int j = 0; j < 16; ++j) {
    out->sc[j] = b.scales[j];
    out->m[j] = 0;
  }
  out->d = Fp16ToFloat(b.d);
}

// KDecodeFn for a block type: copies the bytes (any alignment) and decodes.
template <typename Block, void (*Decode)(const Block&, KDecoded*)>
void DecodeBytes(const uint8_t* block, KDecoded* out) {
  Block b;
  std::memcpy(&b, block, sizeof b);
  Decode(b, out);
}

}  // namespace

void ScaleMinK4(const uint8_t* scales, int j, int32_t* sc, int32_t* m) {
  uint8_t s = 0, mn = 0;
  GetScaleMinK4(j, scales, &s, &mn);
  *sc = s;
  *m = mn;
}

KDecodeFn FindKDecoder(GgmlType type) {
  switch (type) {
    case GgmlType::kQ2_K:
      return DecodeBytes<BlockQ2_K, DecodeQ2_K>;
    case GgmlType::kQ3_K:
      return DecodeBytes<BlockQ3_K, DecodeQ3_K>;
    case GgmlType::kQ4_K:
      return DecodeBytes<BlockQ4_K, DecodeQ4_K>;
    case GgmlType::kQ5_K:
      return DecodeBytes<BlockQ5_K, DecodeQ5_K>;
    case GgmlType::kQ6_K:
      return DecodeBytes<BlockQ6_K, DecodeQ6_K>;
    default:
      return nullptr;
  }
}

bool KQuantHasMins(GgmlType type) {
  return type == GgmlType::kQ2_K || type == GgmlType::kQ4_K || type == GgmlType::kQ5_K;
}

}  // namespace tessera
