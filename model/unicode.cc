#include "model/unicode.h"

#include <array>

namespace tessera {

void AppendUtf8(uint32_t cp, std::string *out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

Utf8Scan ScanUtf8(std::string_view text, size_t *len) {
  if (text.empty()) {
    *len = 0;
    return Utf8Scan::kIncomplete;
  }
  const uint8_t b0 = static_cast<uint8_t>(text[0]);
  // Unicode Table 3-7: the total length and the allowed range of the second
  // byte by lead byte.
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 < 0x80) {
    *len = 1;
    return Utf8Scan::kComplete;
  } else if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 == 0xE0) {
    need = 3, lo = 0xA0;
  } else if (b0 == 0xED) {
    need = 3, hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xE1 && b0 <= 0xEF) {
    need = 3;
  } else if (b0 == 0xF0) {
    need = 4, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    need = 4;
  } else if (b0 == 0xF4) {
    need = 4, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *len = 1;  // 0x80..0xC1 (continuation or overlong lead), 0xF5..0xFF
    return Utf8Scan::kInvalid;
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= text.size()) {
      *len = i;
      return Utf8Scan::kIncomplete;
    }
    const uint8_t b = static_cast<uint8_t>(text[i]);
    const uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (b < min || b > max) {
      *len = i;
      return Utf8Scan::kInvalid;
    }
  }
  *len = need;
  return Utf8Scan::kComplete;
}

size_t Utf8CharLen(std::string_view text, size_t pos) {
  size_t len = 0;
  return ScanUtf8(text.substr(pos), &len) == Utf8Scan::kComplete ? len : 0;
}

uint32_t DecodeUtf8(std::string_view text, size_t pos, size_t len) {
  const auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + i]));
  };
  switch (len) {
    case 1:
      return byte(0);
    case 2:
      return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3:
      return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
             (byte(3) & 0x3F);
  }
}

namespace {

struct Gpt2Tables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> to_byte{};  // every alphabet code point is below U+0144
  Gpt2Tables() {
    to_byte.fill(-1);
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Gpt2Tables &Tables() {
  static const Gpt2Tables *const tables = new Gpt2Tables();
  return *tables;
}

}  // namespace

uint32_t ByteToGpt2CodePoint(uint8_t byte) { return Tables().to_cp[byte]; }

int Gpt2CodePointToByte(uint32_t cp) { return cp < 512 ? Tables().to_byte[cp] : -1; }

std::string BytesToGpt2(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(ByteToGpt2CodePoint(static_cast<uint8_t>(c)), &out);
  return out;
}

}  // namespace tessera
