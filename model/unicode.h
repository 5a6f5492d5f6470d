// UTF-8 helpers for the tokenizer: decoding code points, validating and repairing byte
// streams (for incremental detokenization), and GPT-2's byte <-> printable-character mapping.
//
// All functions are pure and thread-safe.
#ifndef TESSERA_MODEL_UNICODE_H_
#define TESSERA_MODEL_UNICODE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

// Appends the UTF-8 encoding of code point `cp` (must be <= 0x10FFFF) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// Length in bytes of the well-formed UTF-8 character starting at text[pos], or 0 if the bytes
// there are not a complete well-formed character (invalid, or cut off by the end of `text`).
// Well-formed as in Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF.
size_t Utf8CharLen(std::string_view text, size_t pos);

// Decodes the well-formed character of length `len` (from Utf8CharLen) at text[pos].
uint32_t DecodeUtf8(std::string_view text, size_t pos, size_t len);

// Classifies the bytes at the start of `text`:
//   kComplete:   a well-formed character of `*len` bytes;
//   kIncomplete: a proper prefix of some well-formed character that ends with the text (more
//                bytes may complete it);
//   kInvalid:    `*len` bytes (the "maximal subpart", 1..3) that can never be part of a
//                well-formed character; one U+FFFD stands for them (the W3C/Unicode practice
//                that Python's and Rust's lossy decoders follow).
enum class Utf8Scan { kComplete, kIncomplete, kInvalid };
Utf8Scan ScanUtf8(std::string_view text, size_t* len);

// GPT-2's byte-level alphabet: every byte maps to one printable code point, so that any byte
// string becomes a string of visible characters (bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map
// to themselves; the other 68 bytes map, in increasing byte order, to U+0100, U+0101, ...).
// E.g. ' ' (0x20) -> U+0120 'Ġ', '\n' (0x0A) -> U+010A 'Ċ'.
uint32_t ByteToGpt2CodePoint(uint8_t byte);
// The inverse; -1 for a code point that is not in the alphabet.
int Gpt2CodePointToByte(uint32_t cp);
// The byte string `bytes` spelled in the GPT-2 alphabet (UTF-8 encoded).
std::string BytesToGpt2(std::string_view bytes);

}  // namespace tessera

#endif  // TESSERA_MODEL_UNICODE_H_
