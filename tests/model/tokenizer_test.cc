// Tokenizer, PreTokenizer, UTF-8 helpers and Detokenizer on tiny hand-built
// vocabularies whose expected ids are derived by hand in the comments (the BPE
// / SentencePiece rules applied on paper), plus the real SmolLM2 vocabulary
// when TESSERA_TEST_MODEL is present. The Python test
// (tests/python/test_tokenizer.py) compares with Hugging Face `tokenizers` on
// large corpora.
#include "model/tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"
#include "model/pretokenizer.h"
#include "model/unicode.h"
#include "tests/model/gguf_writer_testutil.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---- UTF-8 and the GPT-2 byte alphabet ----

TEST(UnicodeTest, ScanClassifiesPerTable37) {
  size_t len = 0;
  EXPECT_EQ(ScanUtf8("a", &len), Utf8Scan::kComplete);
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(ScanUtf8("\xC3\xA9", &len), Utf8Scan::kComplete);  // é
  EXPECT_EQ(len, 2u);
  EXPECT_EQ(ScanUtf8("\xE4\xB8\xAD", &len), Utf8Scan::kComplete);  // 中
  EXPECT_EQ(len, 3u);
  EXPECT_EQ(ScanUtf8("\xF0\x9F\x98\x80", &len), Utf8Scan::kComplete);  // 😀
  EXPECT_EQ(len, 4u);
  EXPECT_EQ(ScanUtf8("\xF0\x9F\x98", &len), Utf8Scan::kIncomplete);
  EXPECT_EQ(ScanUtf8("\xE4", &len), Utf8Scan::kIncomplete);
  EXPECT_EQ(ScanUtf8("\x80", &len), Utf8Scan::kInvalid);  // lone continuation
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(ScanUtf8("\xC0\xAF", &len), Utf8Scan::kInvalid);  // overlong lead
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(ScanUtf8("\xE0\x80\x80", &len),
            Utf8Scan::kInvalid);  // overlong 3-byte
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(ScanUtf8("\xED\xA0\x80", &len),
            Utf8Scan::kInvalid);  // surrogate U+D800
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(ScanUtf8("\xF4\x90\x80\x80", &len),
            Utf8Scan::kInvalid);  // above U+10FFFF
  EXPECT_EQ(ScanUtf8("\xE4\xB8"
                     "a",
                     &len),
            Utf8Scan::kInvalid);  // maximal subpart of 2
  EXPECT_EQ(len, 2u);
  EXPECT_EQ(ScanUtf8("\xFF", &len), Utf8Scan::kInvalid);
}

TEST(UnicodeTest, Gpt2AlphabetIsTheKnownBijection) {
  // Facts of GPT-2's bytes_to_unicode: printable bytes map to themselves, the
  // rest in order from U+0100: 0x00 -> U+0100, ' ' -> U+0120 'Ġ', '\n' ->
  // U+010A 'Ċ', 0x7F -> U+0121, 0xAD (soft hyphen) -> U+0143 'Ń'.
  EXPECT_EQ(ByteToGpt2CodePoint('A'), static_cast<uint32_t>('A'));
  EXPECT_EQ(ByteToGpt2CodePoint(0xE9), 0xE9u);
  EXPECT_EQ(ByteToGpt2CodePoint(0x00), 0x100u);
  EXPECT_EQ(ByteToGpt2CodePoint(' '), 0x120u);
  EXPECT_EQ(ByteToGpt2CodePoint('\n'), 0x10Au);
  EXPECT_EQ(ByteToGpt2CodePoint(0x7F), 0x121u);
  EXPECT_EQ(ByteToGpt2CodePoint(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(Gpt2CodePointToByte(ByteToGpt2CodePoint(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(Gpt2CodePointToByte(0x20), -1);  // ' ' itself is not in the alphabet
  EXPECT_EQ(BytesToGpt2(" hi\n"), "\xC4\xA0hi\xC4\x8A");
}

// ---- Pre-tokenizers ----

std::vector<std::string> Split(std::string_view pre, std::string_view text) {
  auto p = PreTokenizer::Create(pre);
  EXPECT_TRUE(p.ok()) << p.status();
  std::vector<std::string_view> pieces;
  EXPECT_TRUE((*p)->Split(text, &pieces).ok());
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

TEST(PreTokenizerTest, Gpt2Regex) {
  EXPECT_THAT(Split("gpt2", "Hello world, it's 2024!"),
              ElementsAre("Hello", " world", ",", " it", "'s", " 2024", "!"));
  // \s+(?!\S) leaves the last space of a run to the next word; case-sensitive
  // contractions.
  EXPECT_THAT(Split("gpt2", "a   b I'M\n\nx  "),
              ElementsAre("a", "  ", " b", " I", "'", "M", "\n", "\n", "x", "  "));
}

TEST(PreTokenizerTest, SmolLMSplitsEveryDigit) {
  EXPECT_THAT(Split("smollm", "abc 123x4"), ElementsAre("abc", " ", "1", "2", "3", "x", "4"));
}

TEST(PreTokenizerTest, Llama3Regex) {
  EXPECT_THAT(Split("llama-bpe", "Hello world 12345 I'M"),
              ElementsAre("Hello", " world", " ", "123", "45", " I", "'M"));
  EXPECT_THAT(Split("llama3", "a\n\n b...\n"), ElementsAre("a", "\n\n", " b", "...\n"));
  EXPECT_THAT(Split("llama3", "x   y"), ElementsAre("x", "  ", " y"));
}

TEST(PreTokenizerTest, InvalidUtf8BytesArePiecesOfTheirOwn) {
  EXPECT_THAT(Split("gpt2",
                    "ab\xFF"
                    "cd"),
              ElementsAre("ab", "\xFF", "cd"));
}

TEST(PreTokenizerTest, LongInputsStayLinear) {
  const std::string letters(100000, 'a');
  EXPECT_THAT(Split("llama3", letters), ElementsAre(letters));
  const std::string spaces(100000, ' ');
  const auto pieces = Split("llama3", spaces + "x");
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].size(), 99999u);
  EXPECT_EQ(pieces[1], " x");
}

TEST(PreTokenizerTest, UnknownNameIsAnError) {
  auto p = PreTokenizer::Create("qwen9");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("'qwen9'"));
  EXPECT_THAT(p.status().message(), HasSubstr("smollm"));
}

// ---- Byte-level BPE ----

// 256 byte symbols (id = byte), then the merge results, then specials.
TokenizerVocab ByteLevelVocab(std::vector<std::string> merges, std::string pre = "gpt2") {
  TokenizerVocab v;
  v.model = "gpt2";
  v.pre = std::move(pre);
  for (int b = 0; b < 256; ++b) v.tokens.push_back(BytesToGpt2(std::string(1, char(b))));
  for (const std::string &m : merges) {
    const size_t sp = m.find(' ');
    v.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
  }
  v.merges = std::move(merges);
  v.token_types.assign(v.tokens.size(), 1);
  return v;
}

int32_t AddToken(TokenizerVocab *v, std::string text, TokenType type) {
  v->tokens.push_back(std::move(text));
  v->token_types.push_back(static_cast<int32_t>(type));
  return static_cast<int32_t>(v->tokens.size()) - 1;
}

std::unique_ptr<Tokenizer> Make(TokenizerVocab v) {
  auto t = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer &t, std::string_view text, bool add_special = false,
                         bool parse_special = true) {
  auto ids = t.Encode(text, add_special, parse_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(BpeTest, LowestRankFirstNotLeftmost) {
  // Ids: "bc" = 256 (rank 0), "ab" = 257 (rank 1). In "abc" the rank-0 pair
  // (b,c) wins although (a,b) is further left; then (a,bc) has no merge: [a,
  // bc].
  auto t = Make(ByteLevelVocab({"b c", "a b"}));
  EXPECT_THAT(Enc(*t, "abc"), ElementsAre('a', 256));
  // "abd": only (a,b) applies.
  EXPECT_THAT(Enc(*t, "abd"), ElementsAre(257, 'd'));
}

TEST(BpeTest, ChainedMergesAndLeftmostAmongEqualRanks) {
  // "a a" -> aa (256), "aa a" -> aaa (257). "aaaa": (a,a) at 0 merges first
  // (leftmost), then (a,a) at 2: [aa, aa]; no "aa aa" merge, so it stays.
  // "aaa": [aa, a] -> (aa,a) -> [aaa].
  auto t = Make(ByteLevelVocab({"a a", "aa a"}));
  EXPECT_THAT(Enc(*t, "aaaa"), ElementsAre(256, 256));
  EXPECT_THAT(Enc(*t, "aaa"), ElementsAre(257));
  EXPECT_THAT(Enc(*t, "aaaaa"), ElementsAre(256, 257));  // [aa, aa, a] -> (aa,a) at 2
}

TEST(BpeTest, SpacesAreByteSymbolsAndPiecesDoNotMerge) {
  // "Ġ a" -> "Ġa" (256). " a a": pieces " a", " a" -> [Ġa, Ġa].
  auto t = Make(ByteLevelVocab({"\xC4\xA0 a"}));
  EXPECT_THAT(Enc(*t, " a a"), ElementsAre(256, 256));
  // "a b" never merges across the piece boundary "a" | " b".
  EXPECT_THAT(Enc(*t, "a\n"), ElementsAre('a', '\n'));
}

TEST(BpeTest, HundredKilobytesWithoutSpaces) {
  // "a a" -> aa (256), "aa aa" -> aaaa (257): 100000 a's become 50000 aa
  // (leftmost first), then 25000 aaaa. A quadratic merge loop would take
  // minutes here.
  auto t = Make(ByteLevelVocab({"a a", "aa aa"}));
  const std::vector<int32_t> ids = Enc(*t, std::string(100000, 'a'));
  EXPECT_EQ(ids.size(), 25000u);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 257), 25000);
}

TEST(BpeTest, IgnoreMergesTakesWholeTokensForLlama3) {
  // "hello" is a token no merge reaches; llama-bpe emits it whole, gpt2 spells
  // it out.
  TokenizerVocab v = ByteLevelVocab({"h e"}, "llama-bpe");
  const int32_t hello = AddToken(&v, "hello", TokenType::kNormal);
  EXPECT_THAT(Enc(*Make(v), "hello"), ElementsAre(hello));
  v.pre = "gpt2";
  EXPECT_THAT(Enc(*Make(v), "hello"), ElementsAre(256, 'l', 'l', 'o'));
}

TEST(BpeTest, MissingByteSymbolsBecomeUnknown) {
  TokenizerVocab v = ByteLevelVocab({});
  v.tokens[4] = "<unused-4>";  // no symbol for byte 0x04 any more
  v.unk_id = 'u';
  EXPECT_THAT(Enc(*Make(v),
                  "a\x04"
                  "b"),
              ElementsAre('a', 'u', 'b'));
  v.unk_id = -1;  // none: dropped, as HF's BPE does
  EXPECT_THAT(Enc(*Make(v),
                  "a\x04"
                  "b"),
              ElementsAre('a', 'b'));
}

TEST(BpeTest, InvalidUtf8IsEncodedAsBytes) {
  auto t = Make(ByteLevelVocab({}));
  EXPECT_THAT(Enc(*t, "a\xFF\xC3"), ElementsAre('a', 0xFF, 0xC3));
  EXPECT_EQ(*t->Decode(Enc(*t, "a\xFF\xC3"), false), "a\xFF\xC3");
}

// ---- Special tokens, BOS/EOS ----

TEST(SpecialTokenTest, ControlTokensOnlyWhenParsingUserDefinedAlways) {
  TokenizerVocab v = ByteLevelVocab({});
  const int32_t im_start = AddToken(&v, "<|im_start|>", TokenType::kControl);
  const int32_t im = AddToken(&v, "<|im", TokenType::kControl);  // a prefix: longest wins
  const int32_t user = AddToken(&v, "[TOOL]", TokenType::kUserDefined);
  auto t = Make(v);
  EXPECT_THAT(Enc(*t, "a<|im_start|>b", false, true), ElementsAre('a', im_start, 'b'));
  EXPECT_THAT(Enc(*t, "<|imx", false, true), ElementsAre(im, 'x'));
  // Without parse_special the control token is text ("<|" and "|>" are
  // punctuation pieces).
  EXPECT_THAT(Enc(*t, "<|im_start|>", false, false),
              ElementsAre('<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't', '|', '>'));
  EXPECT_THAT(Enc(*t, "x[TOOL]", false, false), ElementsAre('x', user));
  // Decode renders control tokens only when asked; user-defined always.
  EXPECT_EQ(*t->Decode({'a', im_start, user}, true), "a<|im_start|>[TOOL]");
  EXPECT_EQ(*t->Decode({'a', im_start, user}, false), "a[TOOL]");
}

TEST(SpecialTokenTest, BosAndEosPerMetadata) {
  TokenizerVocab v = ByteLevelVocab({});
  v.bos_id = AddToken(&v, "<s>", TokenType::kControl);
  v.eos_id = AddToken(&v, "</s>", TokenType::kControl);
  v.add_bos = true;
  auto t = Make(v);
  EXPECT_THAT(Enc(*t, "a", true), ElementsAre(v.bos_id, 'a'));
  EXPECT_THAT(Enc(*t, "a", false), ElementsAre('a'));
  EXPECT_THAT(Enc(*t, "", true), ElementsAre(v.bos_id));
  EXPECT_TRUE(t->IsEndOfGeneration(v.eos_id));
  EXPECT_FALSE(t->IsEndOfGeneration('a'));
  v.add_eos = true;
  EXPECT_THAT(Enc(*Make(v), "a", true), ElementsAre(v.bos_id, 'a', v.eos_id));
}

// ---- SentencePiece ----

// <unk>, <s>, </s>, 256 byte tokens (ids 3..258), then pieces with the given
// scores.
TokenizerVocab SpmVocab(std::vector<std::pair<std::string, float>> pieces) {
  TokenizerVocab v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {2, 3, 3};
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
    v.token_types.push_back(6);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  for (auto &[text, score] : pieces) {
    v.tokens.push_back(text);
    v.token_types.push_back(1);
    v.scores.push_back(score);
  }
  v.unk_id = 0, v.bos_id = 1, v.eos_id = 2;
  v.add_bos = true, v.add_space_prefix = true;
  return v;
}

TEST(SpmTest, HighestScoreFirstSpacePrefixAndByteFallback) {
  // 259 ▁, 260 a, 261 b, 262 c, 263 ▁a (-1), 264 ab (-2), 265 bc (-0.5), 266
  // ▁ab (-3). "abc" -> "▁abc": pairs ▁a -1, ab -2, bc -0.5 -> bc first -> [▁,
  // a, bc] -> ▁a -> [▁a, bc].
  TokenizerVocab v = SpmVocab({{"\xE2\x96\x81", -10},
                               {"a", -10},
                               {"b", -10},
                               {"c", -10},
                               {"\xE2\x96\x81"
                                "a",
                                -1},
                               {"ab", -2},
                               {"bc", -0.5f},
                               {"\xE2\x96\x81"
                                "ab",
                                -3}});
  auto t = Make(v);
  EXPECT_THAT(Enc(*t, "abc", true), ElementsAre(1, 263, 265));
  // "ab" -> "▁ab": ▁a (-1) before ab (-2) -> [▁a, b] -> (▁a,b) = ▁ab -> [▁ab].
  EXPECT_THAT(Enc(*t, "ab"), ElementsAre(266));
  // 'é' (C3 A9) is no token: byte fallback, ids 3 + byte.
  EXPECT_THAT(Enc(*t, "é"), ElementsAre(259, 3 + 0xC3, 3 + 0xA9));
  // After a special token the prefix space comes again (HF's Prepend on each
  // fragment).
  EXPECT_THAT(Enc(*t, "a</s>a", false, true), ElementsAre(263, 2, 263));
  // Decode drops the prefix space once, renders byte tokens as bytes.
  EXPECT_EQ(*t->Decode({1, 263, 265, 259, 3 + 0xC3, 3 + 0xA9}, false), "abc é");
  EXPECT_EQ(*t->Decode({1, 263}, true),
            "<s> a");  // text starts with "<s>": space kept
}

TEST(SpmTest, NoByteTokensAndNoUnknownIsAnError) {
  TokenizerVocab v;
  v.model = "llama";
  v.tokens = {"a", "b"};
  auto t = Tokenizer::Create(v);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("unknown token"));
}

// ---- Incremental detokenization ----

TEST(DetokenizerTest, HoldsBackPartialCharacters) {
  auto t = Make(ByteLevelVocab({}));
  Detokenizer d(*t);
  // 中 = E4 B8 AD, one byte token each; 😀 = F0 9F 98 80.
  EXPECT_EQ(*d.Next('a'), "a");
  EXPECT_EQ(*d.Next(0xE4), "");
  EXPECT_EQ(*d.Next(0xB8), "");
  EXPECT_EQ(d.pending_bytes(), 2u);
  EXPECT_EQ(*d.Next(0xAD), "中");
  EXPECT_EQ(*d.Next(0xF0), "");
  EXPECT_EQ(*d.Next(0x9F), "");
  EXPECT_EQ(*d.Next(0x98), "");
  EXPECT_EQ(*d.Next(0x80), "😀");
  EXPECT_EQ(d.Flush(), "");
}

TEST(DetokenizerTest, InvalidBytesBecomeReplacementCharacters) {
  auto t = Make(ByteLevelVocab({}));
  Detokenizer d(*t);
  EXPECT_EQ(*d.Next(0xFF), "\xEF\xBF\xBD");  // can never start a character
  EXPECT_EQ(*d.Next(0xE4), "");              // may still complete
  EXPECT_EQ(*d.Next('x'), "\xEF\xBF\xBDx");  // it did not
  EXPECT_EQ(*d.Next(0xE4), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");  // end of stream
  EXPECT_FALSE(d.Next(99999).ok());      // out of range
}

TEST(DetokenizerTest, ConcatenationEqualsDecodeForRandomText) {
  // Merges spelled in the GPT-2 alphabet: " a" and "中" (E4 B8 AD) become one
  // token each.
  auto t =
      Make(ByteLevelVocab({BytesToGpt2(" ") + " a", BytesToGpt2("\xE4") + " " + BytesToGpt2("\xB8"),
                           BytesToGpt2("\xE4\xB8") + " " + BytesToGpt2("\xAD")}));
  const std::string text = "a 中 b 😀 é\n\tx";
  const std::vector<int32_t> ids = Enc(*t, text);
  Detokenizer d(*t);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = *d.Next(id);
    size_t len = 0;
    for (size_t pos = 0; pos < piece.size(); pos += len) {  // every piece is whole characters
      ASSERT_EQ(ScanUtf8(std::string_view(piece).substr(pos), &len), Utf8Scan::kComplete);
    }
    streamed += piece;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(*t->Decode(ids, false), text);
}

TEST(DetokenizerTest, SentencePieceDropsOnlyTheFirstPrefixSpace) {
  auto t =
      Make(SpmVocab({{"\xE2\x96\x81"
                      "a",
                      -1}}));
  Detokenizer d(*t);
  EXPECT_EQ(*d.Next(1), "");  // <s> not rendered
  EXPECT_EQ(*d.Next(259), "a");
  EXPECT_EQ(*d.Next(259), " a");
}

// ---- Validation ----

TEST(TokenizerErrorsTest, ClearMessages) {
  TokenizerVocab v = ByteLevelVocab({"a b"});
  v.model = "wordpiece";
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("'wordpiece'"));

  v = ByteLevelVocab({"a b"});
  v.merges.push_back("a zz");
  EXPECT_THAT(Tokenizer::Create(v).status().message(),
              HasSubstr("tokenizer.ggml.merges[1] = 'a zz'"));

  v = ByteLevelVocab({});
  v.pre = "mystery";
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("'mystery'"));

  v = ByteLevelVocab({});
  v.bos_id = 100000;
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("bos_token_id is 100000"));

  v = ByteLevelVocab({});
  v.token_types.pop_back();
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("token_type has 255 entries"));

  auto t = Make(ByteLevelVocab({}));
  EXPECT_THAT(t->Decode({1, -3}, false).status().message(), HasSubstr("token id -3"));
}

// ---- From GGUF ----

TEST(TokenizerGgufTest, ReadsMetadataAndRejectsBadArrays) {
  using test::TestValue;
  test::GgufWriter w;
  std::vector<TestValue> tokens, types;
  for (const char *s : {"<unk>", "<s>", "</s>",
                        "\xE2\x96\x81"
                        "a",
                        "a"}) {
    tokens.push_back(TestValue::Str(s));
  }
  for (int ty : {2, 3, 3, 1, 1}) types.push_back(TestValue::I32(ty));
  w.Add("tokenizer.ggml.model", TestValue::Str("llama"));
  w.Add("tokenizer.ggml.tokens", TestValue::Array(test::kTString, tokens));
  w.Add("tokenizer.ggml.token_type", TestValue::Array(test::kTI32, types));
  w.Add("tokenizer.ggml.unknown_token_id", TestValue::U32(0));
  w.Add("tokenizer.ggml.bos_token_id", TestValue::U32(1));
  w.Add("tokenizer.ggml.eos_token_id", TestValue::U32(2));
  const std::string image = w.Build();
  auto f = GgufFile::FromBuffer("tiny.gguf", image.data(), image.size());
  ASSERT_TRUE(f.ok()) << f.status();
  auto v = TokenizerVocabFromGguf(**f);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->model, "llama");
  EXPECT_TRUE(v->add_bos);           // SentencePiece default
  EXPECT_TRUE(v->add_space_prefix);  // SentencePiece default
  EXPECT_EQ(v->bos_id, 1);
  auto t = Tokenizer::FromGguf(**f);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Enc(**t, "a", true), ElementsAre(1, 3));

  types.pop_back();
  w.kvs[2].second = TestValue::Array(test::kTI32, types);
  const std::string bad = w.Build();
  auto g = GgufFile::FromBuffer("bad.gguf", bad.data(), bad.size());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(TokenizerVocabFromGguf(**g).status().message(),
              HasSubstr("bad.gguf: tokenizer.ggml.token_type has 4 entries for 5 tokens"));
}

class SmolLM2TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char *path = std::getenv("TESSERA_TEST_MODEL");
    if (path == nullptr || access(path, R_OK) != 0) {
      GTEST_SKIP() << "real model not found (set TESSERA_TEST_MODEL; "
                      "scripts/fetch-model "
                      "fetches SmolLM2-135M-Instruct.Q4_1.gguf)";
    }
    auto f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::move(*f);
    auto t = Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = std::move(*t);
  }
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(SmolLM2TokenizerTest, KnownTokensAndRoundTrip) {
  EXPECT_EQ(tok_->n_tokens(), 49152);
  EXPECT_EQ(tok_->model(), "gpt2");
  EXPECT_FALSE(tok_->add_bos());
  const std::vector<int32_t> ids = Enc(*tok_, "<|im_start|>user\nHello world<|im_end|>");
  ASSERT_EQ(ids.size(), 6u);
  EXPECT_EQ(ids[0], 1);  // <|im_start|>
  EXPECT_EQ(tok_->token_text(ids[1]), "user");
  EXPECT_EQ(tok_->token_text(ids[2]), "\xC4\x8A");  // "\n" as 'Ċ'
  EXPECT_EQ(tok_->token_text(ids[3]), "Hello");
  EXPECT_EQ(tok_->token_text(ids[4]), "\xC4\xA0world");  // "Ġworld"
  EXPECT_EQ(ids[5], 2);                                  // <|im_end|>
  EXPECT_TRUE(tok_->IsEndOfGeneration(2));
  EXPECT_TRUE(tok_->IsEndOfGeneration(0));  // <|endoftext|>
  EXPECT_FALSE(tok_->IsEndOfGeneration(ids[3]));
  const std::string text = "Numbers 1234, café 中文 😀\n\tdone";
  EXPECT_EQ(*tok_->Decode(Enc(*tok_, text), false), text);
}

}  // namespace
}  // namespace tessera
