// GgufFile: round-trips of every metadata type, tensor views, and the hostile-file set. Files
// come from the independent test writer (gguf_writer_testutil.h); the Python test
// (tests/python/test_gguf_reader.py) cross-checks against the gguf package's reader and writer.
#include "model/gguf.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/gguf_writer_testutil.h"

namespace tessera {
namespace {

using test::GgufLayout;
using test::GgufWriter;
using test::TestValue;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kQ4_K = 12;

// Parses `bytes` from an exactly-sized heap copy, so that any read past the end is caught by
// AddressSanitizer. The returned file keeps the copy alive through `storage`.
struct Parsed {
  std::unique_ptr<uint8_t[]> storage;
  absl::StatusOr<std::unique_ptr<GgufFile>> file;
};
Parsed Parse(const std::string& bytes, size_t n = std::string::npos) {
  if (n == std::string::npos) n = bytes.size();
  Parsed p;
  p.storage = std::make_unique<uint8_t[]>(n);
  std::memcpy(p.storage.get(), bytes.data(), n);
  p.file = GgufFile::FromBuffer("t.gguf", n ? p.storage.get() : nullptr, n);
  return p;
}

std::string ErrorOf(const std::string& bytes) {
  Parsed p = Parse(bytes);
  if (p.file.ok()) return "OK";
  return std::string(p.file.status().message());
}

// A small file with one of everything: every scalar type, strings, arrays, arrays of arrays,
// and three tensors of different types.
GgufWriter EveryTypeWriter() {
  GgufWriter w;
  w.Add("u8", TestValue::U8(250))
      .Add("i8", TestValue::I8(-7))
      .Add("u16", TestValue::U16(65535))
      .Add("i16", TestValue::I16(-32768))
      .Add("u32", TestValue::U32(4000000000u))
      .Add("i32", TestValue::I32(-2000000000))
      .Add("u64", TestValue::U64(std::numeric_limits<uint64_t>::max()))
      .Add("i64", TestValue::I64(std::numeric_limits<int64_t>::min()))
      .Add("f32", TestValue::F32(-1.5e-7f))
      .Add("f64", TestValue::F64(3.141592653589793))
      .Add("b_true", TestValue::Bool(true))
      .Add("b_false", TestValue::Bool(false))
      .Add("s", TestValue::Str("h\xc3\xa9llo\n"))
      .Add("s_empty", TestValue::Str(""))
      .Add("a_i16", TestValue::Array(test::kTI16, {TestValue::I16(-1), TestValue::I16(2)}))
      .Add("a_f32", TestValue::Array(test::kTF32, {TestValue::F32(0.5f), TestValue::F32(-2)}))
      .Add("a_str", TestValue::Array(test::kTString, {TestValue::Str("a"), TestValue::Str("")}))
      .Add("a_bool",
           TestValue::Array(test::kTBool, {TestValue::Bool(true), TestValue::Bool(false)}))
      .Add("a_empty", TestValue::Array(test::kTU64, {}))
      .Add("a_nested",
           TestValue::Array(
               test::kTArray,
               {TestValue::Array(test::kTU8, {TestValue::U8(1), TestValue::U8(2)}),
                TestValue::Array(test::kTString, {TestValue::Str("x")}),
                TestValue::Array(test::kTArray,
                                 {TestValue::Array(test::kTI64, {TestValue::I64(-9)})})}));
  w.AddTensor("a", kF32, {3, 2});
  w.AddTensor("b", kQ8_0, {64});
  w.AddTensor("c", kF16, {5, 1, 2});
  return w;
}

TEST(GgufValueTest, EveryScalarTypeRoundTrips) {
  Parsed p = Parse(EveryTypeWriter().Build());
  ASSERT_TRUE(p.file.ok()) << p.file.status();
  const GgufFile& f = **p.file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 20u);
  EXPECT_EQ(f.metadata()[0].key, "u8");
  EXPECT_EQ(f.Find("u8")->type(), GgufValueType::kUint8);
  EXPECT_EQ(*f.GetU32("u8"), 250u);
  EXPECT_EQ(*f.GetI64("i8"), -7);
  EXPECT_EQ(*f.GetU32("u16"), 65535u);
  EXPECT_EQ(*f.GetI64("i16"), -32768);
  EXPECT_EQ(*f.GetU32("u32"), 4000000000u);
  EXPECT_EQ(*f.GetI64("i32"), -2000000000);
  EXPECT_EQ(*f.GetU64("u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*f.GetI64("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*f.GetF32("f32"), -1.5e-7f);
  EXPECT_EQ(*f.GetF64("f64"), 3.141592653589793);
  EXPECT_EQ(*f.GetF32("f64"), 3.1415927f);
  EXPECT_TRUE(*f.GetBool("b_true"));
  EXPECT_FALSE(*f.GetBool("b_false"));
  EXPECT_EQ(*f.GetString("s"), "h\xc3\xa9llo\n");
  EXPECT_EQ(f.Find("s")->ToString(), "\"h\xc3\xa9llo\\n\"");
  EXPECT_EQ(*f.GetString("s_empty"), "");
  EXPECT_EQ(f.Find("i16")->ToString(), "-32768");
  EXPECT_EQ(f.Find("b_true")->ToString(), "true");
}

TEST(GgufValueTest, ArraysAndArraysOfArraysRoundTrip) {
  Parsed p = Parse(EveryTypeWriter().Build());
  ASSERT_TRUE(p.file.ok()) << p.file.status();
  const GgufFile& f = **p.file;
  EXPECT_EQ(*f.GetIntArray("a_i16"), (std::vector<int64_t>{-1, 2}));
  EXPECT_EQ(*f.GetF32Array("a_f32"), (std::vector<float>{0.5f, -2.0f}));
  std::vector<std::string_view> strs = *f.GetStringArray("a_str");
  ASSERT_EQ(strs.size(), 2u);
  EXPECT_EQ(strs[0], "a");
  EXPECT_EQ(strs[1], "");
  const GgufValue* b = f.Find("a_bool");
  ASSERT_EQ(b->size(), 2u);
  EXPECT_TRUE(*b->element(0).AsBool());
  EXPECT_FALSE(*b->element(1).AsBool());
  const GgufValue* e = f.Find("a_empty");
  EXPECT_EQ(e->element_type(), GgufValueType::kUint64);
  EXPECT_EQ(e->size(), 0u);
  EXPECT_TRUE(f.GetIntArray("a_empty")->empty());

  const GgufValue* n = f.Find("a_nested");
  ASSERT_EQ(n->type(), GgufValueType::kArray);
  ASSERT_EQ(n->element_type(), GgufValueType::kArray);
  ASSERT_EQ(n->size(), 3u);
  GgufValue n0 = n->element(0);
  EXPECT_EQ(n0.element_type(), GgufValueType::kUint8);
  ASSERT_EQ(n0.size(), 2u);
  EXPECT_EQ(*n0.element(1).AsU64(), 2u);
  EXPECT_EQ(*n->element(1).element(0).AsString(), "x");
  GgufValue n2 = n->element(2);
  EXPECT_EQ(n2.element_type(), GgufValueType::kArray);
  EXPECT_EQ(*n2.element(0).element(0).AsI64(), -9);
  EXPECT_EQ(n->ToString(), "[[1, 2], [\"x\"], [[-9]]]");
}

TEST(GgufValueTest, TypedGettersNameKeyAndTypes) {
  Parsed p = Parse(EveryTypeWriter().Build());
  ASSERT_TRUE(p.file.ok()) << p.file.status();
  const GgufFile& f = **p.file;
  auto msg = [](const auto& r) { return std::string(r.status().message()); };
  EXPECT_THAT(msg(f.GetU32("s")), AllOf(HasSubstr("t.gguf"), HasSubstr("'s'"), HasSubstr("STRING"),
                                        HasSubstr("integer")));
  EXPECT_THAT(msg(f.GetU32("u64")),
              AllOf(HasSubstr("'u64'"), HasSubstr("18446744073709551615"), HasSubstr("UINT32")));
  EXPECT_THAT(msg(f.GetU64("i8")), AllOf(HasSubstr("'i8'"), HasSubstr("-7")));
  EXPECT_THAT(msg(f.GetI64("u64")), AllOf(HasSubstr("'u64'"), HasSubstr("INT64")));
  EXPECT_THAT(msg(f.GetF32("u32")),
              AllOf(HasSubstr("'u32'"), HasSubstr("UINT32"), HasSubstr("FLOAT32")));
  EXPECT_THAT(msg(f.GetBool("u8")), AllOf(HasSubstr("'u8'"), HasSubstr("BOOL")));
  EXPECT_THAT(msg(f.GetString("a_str")), AllOf(HasSubstr("'a_str'"), HasSubstr("ARRAY")));
  EXPECT_THAT(msg(f.GetStringArray("a_i16")),
              AllOf(HasSubstr("'a_i16'"), HasSubstr("ARRAY of INT16"), HasSubstr("STRING")));
  EXPECT_THAT(msg(f.GetIntArray("a_f32")), HasSubstr("ARRAY of FLOAT32"));
  EXPECT_THAT(msg(f.GetF32Array("s")), HasSubstr("has type STRING"));
  EXPECT_EQ(f.GetU32("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(msg(f.GetU32("nope")), HasSubstr("'nope' is missing"));
  EXPECT_EQ(*f.GetU32Or("nope", 7), 7u);
  EXPECT_EQ(*f.GetF32Or("nope", 2.5f), 2.5f);
  EXPECT_EQ(*f.GetStringOr("nope", "d"), "d");
  EXPECT_FALSE(f.GetU32Or("s", 7).ok());  // present with the wrong type is still an error
}

TEST(GgufTensorTest, InfosViewsAndRanges) {
  GgufLayout lay;
  const std::string bytes = EveryTypeWriter().Build(&lay);
  Parsed p = Parse(bytes);
  ASSERT_TRUE(p.file.ok()) << p.file.status();
  const GgufFile& f = **p.file;
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), lay.data_at);
  EXPECT_EQ(f.data_offset() % 32, 0u);

  const GgufTensorInfo& a = f.tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.type(), GgmlType::kF32);
  EXPECT_EQ(a.n_dims, 2);
  EXPECT_EQ(a.ne, (std::array<int64_t, 4>{3, 2, 1, 1}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.row_bytes, 12);
  EXPECT_EQ(a.offset, 0u);
  const GgufTensorInfo* b = f.FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->raw_type, kQ8_0);
  EXPECT_EQ(b->nbytes, 68u);  // two 34-byte Q8_0 blocks
  EXPECT_EQ(b->offset, 32u);
  EXPECT_EQ(b->file_offset, lay.tensor_data_at[1]);
  const GgufTensorInfo& c = *f.GetTensor("c").value();
  EXPECT_EQ(c.n_dims, 3);
  EXPECT_EQ(c.n_rows(), 2);
  EXPECT_EQ(c.n_elems(), 10);
  EXPECT_EQ(c.nbytes, 20u);
  EXPECT_EQ(c.offset, 128u);  // b ends at 100; next multiple of 32
  EXPECT_THAT(std::string(f.GetTensor("zz").status().message()),
              HasSubstr("tensor 'zz' is missing"));

  // Views point into the buffer, at the writer's offsets.
  const uint8_t* base = p.storage.get();
  TensorView v = f.View(c);
  EXPECT_EQ(v.data, base + lay.tensor_data_at[2]);
  EXPECT_EQ(v.n_elems(), 10);
  EXPECT_EQ(v.nbytes, 20);
  QuantMatrix m = f.Matrix(c);
  EXPECT_EQ(m.rows, 2);
  EXPECT_EQ(m.cols, 5);
  EXPECT_EQ(m.row_bytes, 10);
  EXPECT_EQ(m.row(1), base + lay.tensor_data_at[2] + 10);

  absl::StatusOr<GgufByteRange> r = f.RowRange(a, 1, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->file_offset, lay.tensor_data_at[0] + 12);
  EXPECT_EQ(r->nbytes, 12u);
  EXPECT_EQ(r->data, base + r->file_offset);
  EXPECT_TRUE(f.RowRange(a, 0, 2).ok());
  EXPECT_TRUE(f.RowRange(a, 2, 0).ok());
  EXPECT_THAT(std::string(f.RowRange(a, 1, 2).status().message()),
              AllOf(HasSubstr("tensor 'a'"), HasSubstr("outside its 2 rows")));
  EXPECT_FALSE(f.RowRange(a, -1, 1).ok());
  EXPECT_FALSE(f.RowRange(a, 0, std::numeric_limits<int64_t>::max()).ok());
}

TEST(GgufTensorTest, SubMatrixFallsOnBlockBoundaries) {
  GgufWriter w;
  w.AddTensor("w", kQ4_0, {128, 6});
  GgufLayout lay;
  const std::string bytes = w.Build(&lay);
  Parsed p = Parse(bytes);
  ASSERT_TRUE(p.file.ok()) << p.file.status();
  const GgufFile& f = **p.file;
  const GgufTensorInfo& t = f.tensors()[0];
  EXPECT_EQ(t.row_bytes, 4 * 18);
  absl::StatusOr<QuantMatrix> m = f.SubMatrix(t, 2, 3, 64, 32);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 3);
  EXPECT_EQ(m->cols, 32);
  EXPECT_EQ(m->row_bytes, 72);
  EXPECT_EQ(m->data, p.storage.get() + lay.tensor_data_at[0] + 2 * 72 + 2 * 18);
  EXPECT_THAT(std::string(f.SubMatrix(t, 0, 1, 16, 32).status().message()),
              AllOf(HasSubstr("Q4_0"), HasSubstr("block boundaries"), HasSubstr("[16, 48)")));
  EXPECT_FALSE(f.SubMatrix(t, 0, 1, 96, 64).ok());
  EXPECT_FALSE(f.SubMatrix(t, 5, 2, 0, 32).ok());
}

TEST(GgufFileTest, CustomAlignmentAndVersion2) {
  for (uint32_t align : {1u, 8u, 64u, 4096u}) {
    GgufWriter w = EveryTypeWriter();
    w.version = 2;
    w.SetAlignment(align);
    GgufLayout lay;
    const std::string bytes = w.Build(&lay);
    Parsed p = Parse(bytes);
    ASSERT_TRUE(p.file.ok()) << align << ": " << p.file.status();
    const GgufFile& f = **p.file;
    EXPECT_EQ(f.version(), 2u);
    EXPECT_EQ(f.alignment(), align);
    EXPECT_EQ(f.data_offset(), lay.data_at);
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      EXPECT_EQ(f.tensors()[i].file_offset, lay.tensor_data_at[i]);
    }
  }
}

TEST(GgufFileTest, OpenMapsARealFile) {
  GgufLayout lay;
  const std::string bytes = test::TinyLlamaWriter().Build(&lay);
  const std::string path = test::WriteTempFile(bytes, "tiny_llama");
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), path);
  EXPECT_EQ((*f)->file_size(), bytes.size());
  EXPECT_EQ((*f)->tensors().size(), 20u);
  const GgufTensorInfo* t = (*f)->FindTensor("blk.1.ffn_down.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::memcmp((*f)->data(*t), bytes.data() + t->file_offset, t->nbytes), 0);
  std::remove(path.c_str());

  absl::StatusOr<std::unique_ptr<GgufFile>> missing = GgufFile::Open(path);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(GgufFile::Open("/").status().message()), HasSubstr("not a regular file"));
  const std::string empty = test::WriteTempFile("", "empty");
  EXPECT_THAT(std::string(GgufFile::Open(empty).status().message()),
              AllOf(StartsWith(empty), HasSubstr("0 bytes")));
  std::remove(empty.c_str());
}

// ---- Hostile files. Each case names the field and the offending value. ----

TEST(GgufHostileTest, TruncatedAtEveryByteFailsCleanly) {
  for (const GgufWriter& w : {EveryTypeWriter(), test::TinyLlamaWriter()}) {
    GgufLayout lay;
    const std::string bytes = w.Build(&lay);
    // Every byte through the header, metadata and tensor infos; in the tensor data (one code
    // path: the bounds check of each tensor) a sparser sample keeps the sanitizer run short.
    for (size_t n = 0; n < bytes.size(); n += (n < lay.data_at + 64 ? 1 : 97)) {
      Parsed p = Parse(bytes, n);
      ASSERT_FALSE(p.file.ok()) << "a prefix of " << n << " of " << bytes.size()
                                << " bytes was accepted";
      ASSERT_THAT(std::string(p.file.status().message()), StartsWith("t.gguf: ")) << n;
    }
    EXPECT_TRUE(Parse(bytes).file.ok());
  }
}

TEST(GgufHostileTest, MagicAndVersion) {
  std::string bytes = EveryTypeWriter().Build();
  std::string bad = bytes;
  bad[3] = 'L';
  EXPECT_THAT(ErrorOf(bad), AllOf(HasSubstr("not a GGUF file"), HasSubstr("\"GGUL\"")));
  EXPECT_THAT(ErrorOf("GG"), HasSubstr("only 2 bytes"));
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    std::string b = bytes;
    test::PatchU32(&b, 4, v);
    const std::string err = ErrorOf(b);
    EXPECT_THAT(err, HasSubstr("version")) << v;
    if (v == 1) {
      EXPECT_THAT(err, HasSubstr("version 1 is not supported"));
    } else if (v == 4) {
      EXPECT_THAT(err, HasSubstr("unsupported GGUF version 4"));
    } else if (v == 0x03000000u) {
      EXPECT_THAT(err, HasSubstr("big-endian"));
    }
  }
}

TEST(GgufHostileTest, HugeCounts) {
  GgufLayout lay;
  const std::string bytes = EveryTypeWriter().Build(&lay);
  std::string b = bytes;
  test::PatchU64(&b, lay.tensor_count_at, uint64_t{1} << 62);
  EXPECT_THAT(ErrorOf(b),
              AllOf(HasSubstr("tensor_count 4611686018427387904"), HasSubstr("impossible")));
  b = bytes;
  test::PatchU64(&b, lay.kv_count_at, std::numeric_limits<uint64_t>::max());
  EXPECT_THAT(ErrorOf(b),
              AllOf(HasSubstr("kv_count 18446744073709551615"), HasSubstr("impossible")));
  // Counts that fit the quick check but not the real content: the parser runs off the end.
  b = bytes;
  test::PatchU64(&b, lay.kv_count_at, 21);
  EXPECT_THAT(ErrorOf(b), StartsWith("t.gguf: "));
  b = bytes;
  test::PatchU64(&b, lay.tensor_count_at, 4);
  EXPECT_THAT(ErrorOf(b), StartsWith("t.gguf: "));
}

TEST(GgufHostileTest, HugeStringLengths) {
  GgufLayout lay;
  const std::string bytes = EveryTypeWriter().Build(&lay);
  std::string b = bytes;
  test::PatchU64(&b, lay.kv_at[3], uint64_t{1} << 40);  // key length of "i16"
  EXPECT_THAT(ErrorOf(b), AllOf(HasSubstr("metadata #3"), HasSubstr("key length 1099511627776"),
                                HasSubstr("exceeds")));
  b = bytes;
  test::PatchU64(&b, lay.tensor_info_at[1], std::numeric_limits<uint64_t>::max());
  EXPECT_THAT(ErrorOf(b),
              AllOf(HasSubstr("tensor #1"), HasSubstr("name length 18446744073709551615")));
  GgufWriter w = EveryTypeWriter();
  TestValue s = TestValue::Str("abc");
  s.length_override = uint64_t{1} << 63;
  w.Add("long", s);
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("metadata key 'long'"),
                                        HasSubstr("string length 9223372036854775808")));
  w = EveryTypeWriter();
  TestValue a = TestValue::Array(test::kTString, {TestValue::Str("ok"), TestValue::Str("bad")});
  a.elements[1].length_override = 1000000;
  w.Add("arr", a);
  EXPECT_THAT(ErrorOf(w.Build()),
              AllOf(HasSubstr("metadata key 'arr'"), HasSubstr("array element 1"),
                    HasSubstr("string length 1000000")));
}

TEST(GgufHostileTest, HugeArrayCounts) {
  for (uint32_t elem : {test::kTU8, test::kTU64, test::kTString, test::kTArray, test::kTBool}) {
    for (uint64_t count :
         {uint64_t{1} << 62, std::numeric_limits<uint64_t>::max(), uint64_t{1} << 20}) {
      GgufWriter w = EveryTypeWriter();
      TestValue a = TestValue::Array(elem, {});
      a.length_override = count;
      w.Add("big", a);
      EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("metadata key 'big'"),
                                            HasSubstr("element count " + std::to_string(count))))
          << elem;
    }
  }
  // Nested: the inner array's count is checked too.
  GgufWriter w = EveryTypeWriter();
  TestValue inner = TestValue::Array(test::kTU32, {TestValue::U32(1)});
  inner.length_override = uint64_t{1} << 61;
  w.Add("nested", TestValue::Array(test::kTArray, {inner}));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("'nested'"), HasSubstr("array element 0"),
                                        HasSubstr("element count 2305843009213693952")));
}

TEST(GgufHostileTest, NestingDepthIsLimited) {
  auto nest = [](int depth) {
    TestValue v = TestValue::Array(test::kTU8, {TestValue::U8(1)});
    for (int d = 1; d < depth; ++d) v = TestValue::Array(test::kTArray, {v});
    GgufWriter w = EveryTypeWriter();
    w.Add("deep", v);
    return w.Build();
  };
  EXPECT_EQ(ErrorOf(nest(kGgufMaxArrayDepth)), "OK");
  EXPECT_THAT(ErrorOf(nest(kGgufMaxArrayDepth + 1)),
              AllOf(HasSubstr("'deep'"), HasSubstr("nested deeper than 8")));
  EXPECT_THAT(ErrorOf(nest(200)), HasSubstr("nested deeper than 8"));
}

TEST(GgufHostileTest, UnknownValueTypesAndBadBools) {
  GgufWriter w = EveryTypeWriter();
  w.Add("weird", TestValue::Raw(13, "x"));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("'weird'"), HasSubstr("unknown value type 13")));
  w = EveryTypeWriter();
  w.Add("weird_arr", TestValue::Array(0xFFFFFFFFu, {}));
  EXPECT_THAT(ErrorOf(w.Build()),
              AllOf(HasSubstr("'weird_arr'"), HasSubstr("unknown array element type 4294967295")));
  w = EveryTypeWriter();
  w.Add("flag", TestValue::Raw(test::kTBool, "\x07"));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("'flag'"), HasSubstr("BOOL value is 7")));
  w = EveryTypeWriter();
  w.Add("flags", TestValue::Array(test::kTBool,
                                  {TestValue::Bool(true), TestValue::Raw(test::kTBool, "\x02")}));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("'flags'"), HasSubstr("element 1 is 2")));
}

TEST(GgufHostileTest, DuplicateAndInvalidKeys) {
  GgufWriter w = EveryTypeWriter();
  w.Add("u16", TestValue::U8(1));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("'u16'"), HasSubstr("duplicate key")));
  w = EveryTypeWriter();
  w.Add("", TestValue::U8(1));
  EXPECT_THAT(ErrorOf(w.Build()), HasSubstr("key is empty"));
  w = EveryTypeWriter();
  w.Add("bad\xff", TestValue::U8(1));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("bad\\xff"), HasSubstr("not valid UTF-8")));
}

TEST(GgufHostileTest, Alignment) {
  for (uint32_t a : {0u, 3u, 48u}) {
    GgufWriter w = EveryTypeWriter();
    w.Add("general.alignment", TestValue::U32(a));
    EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("general.alignment' is " + std::to_string(a)),
                                          HasSubstr("power of two")));
  }
  GgufWriter w = EveryTypeWriter();
  w.Add("general.alignment", TestValue::Str("32"));
  EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("general.alignment"), HasSubstr("STRING")));
  w = EveryTypeWriter();
  w.Add("general.alignment", TestValue::U64(uint64_t{1} << 40));
  EXPECT_THAT(ErrorOf(w.Build()), HasSubstr("1099511627776"));
  // A tensor offset that is not a multiple of the alignment.
  w = EveryTypeWriter();
  w.tensors[1].offset_override = 40;
  EXPECT_THAT(ErrorOf(w.Build()),
              AllOf(HasSubstr("tensor 'b'"), HasSubstr("offset 40"), HasSubstr("alignment 32")));
}

TEST(GgufHostileTest, TensorShapes) {
  struct Case {
    std::vector<uint64_t> ne;
    std::optional<uint32_t> n_dims;
    uint32_t type;
    const char* expect;
  };
  const Case cases[] = {
      {{}, 0u, kF32, "n_dims is 0; must be 1..4"},
      {{1, 1, 1, 1, 1}, 5u, kF32, "n_dims is 5; must be 1..4"},
      {{4}, 0xFFFFFFFFu, kF32, "n_dims is 4294967295"},
      {{4, 0}, {}, kF32, "ne[1] is 0"},
      {{uint64_t{1} << 63, 1}, {}, kF32, "ne[0] is 9223372036854775808"},
      {{uint64_t{1} << 40, uint64_t{1} << 40},
       {},
       kF32,
       "shape [1099511627776, 1099511627776] has more than 2^63-1 elements"},
      {{uint64_t{1} << 32, uint64_t{1} << 31}, {}, kF32, "more than 2^63-1 elements"},
      {{uint64_t{1} << 62}, {}, kF32, "overflows 64 bits"},
      {{33, 2}, {}, kQ4_0, "ne[0] = 33 is not a multiple of 32, the block size of Q4_0"},
      {{64}, {}, kQ4_K, "ne[0] = 64 is not a multiple of 256"},
      {{32}, {}, 99, "type unknown(99) (id 99) is not supported"},
      {{32}, {}, 9, "type Q8_1 (id 9) is not supported"},
      {{32}, {}, 16, "type IQ2_XXS (id 16)"},
  };
  for (const Case& c : cases) {
    GgufWriter w = EveryTypeWriter();
    w.AddTensor("bad.weight", c.type, c.ne, std::string(64, '\0'));
    w.tensors.back().n_dims_override = c.n_dims;
    EXPECT_THAT(ErrorOf(w.Build()), AllOf(HasSubstr("tensor 'bad.weight'"), HasSubstr(c.expect)))
        << c.expect;
  }
}

TEST(GgufHostileTest, TensorPlacement) {
  GgufLayout lay;
  const std::string bytes = EveryTypeWriter().Build(&lay);
  const uint64_t size = bytes.size();
  // Offset past the end.
  std::string b = bytes;
  test::PatchU64(&b, lay.tensor_offset_at[2], 1 << 20);
  EXPECT_THAT(
      ErrorOf(b),
      AllOf(HasSubstr("tensor 'c'"),
            HasSubstr("data [" + std::to_string(lay.data_at + (1 << 20)) + ", " +
                      std::to_string(lay.data_at + (1 << 20) + 20) + ")"),
            HasSubstr("extends past the end of the file (" + std::to_string(size) + " bytes)")));
  // Offsets so large that offset + size wraps around.
  b = bytes;
  test::PatchU64(&b, lay.tensor_offset_at[0], std::numeric_limits<uint64_t>::max() - 31);
  EXPECT_THAT(ErrorOf(b), AllOf(HasSubstr("tensor 'a'"), HasSubstr("past the end")));
  b = bytes;
  test::PatchU64(&b, lay.tensor_offset_at[0], std::numeric_limits<uint64_t>::max() - 31 - 64);
  EXPECT_THAT(ErrorOf(b), AllOf(HasSubstr("tensor 'a'"), HasSubstr("past the end")));
  // Ends one byte too late (the last tensor is flush with the end of the file).
  EXPECT_THAT(ErrorOf(bytes.substr(0, size - 1)),
              AllOf(HasSubstr("tensor 'c'"), HasSubstr("past the end of the file")));
  // Overlap.
  b = bytes;
  test::PatchU64(&b, lay.tensor_offset_at[1], 0);
  EXPECT_THAT(ErrorOf(b), AllOf(HasSubstr("tensor 'a' data"), HasSubstr("overlaps tensor 'b'")));
  b = bytes;
  test::PatchU64(&b, lay.tensor_offset_at[2], 64);  // inside b's [32, 100)
  EXPECT_THAT(ErrorOf(b), HasSubstr("overlaps"));
}

TEST(GgufHostileTest, TensorNames) {
  auto with_name = [](std::string name) {
    GgufWriter w = EveryTypeWriter();
    w.AddTensor(std::move(name), kF32, {4});
    return ErrorOf(w.Build());
  };
  EXPECT_THAT(with_name("b"), AllOf(HasSubstr("tensor 'b'"), HasSubstr("duplicate tensor name")));
  EXPECT_THAT(with_name(""), AllOf(HasSubstr("tensor #3"), HasSubstr("name is empty")));
  EXPECT_THAT(with_name(std::string(65, 'n')),
              AllOf(HasSubstr("65 bytes long"), HasSubstr("limit is 64")));
  EXPECT_EQ(with_name(std::string(64, 'n')), "OK");
  EXPECT_EQ(with_name("caf\xc3\xa9.\xf0\x9f\x98\x80"), "OK");
  for (const char* bad : {"\xff", "a\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "\xe0\x80\xaf", "x\x80y"}) {
    EXPECT_THAT(with_name(bad), AllOf(HasSubstr("tensor #3"), HasSubstr("not valid UTF-8"))) << bad;
  }
}

// Random corruption of a valid file: whatever the outcome, no crash and no out-of-bounds read
// (this runs under ASan/UBSan in the sanitizer build). A cheap stand-in for the fuzzer.
TEST(GgufHostileTest, RandomCorruptionNeverCrashes) {
  GgufLayout lay;
  const std::string bytes = test::TinyLlamaWriter().Build(&lay);
  std::mt19937_64 rng(1234);
  int rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = bytes.substr(0, lay.data_at + 64);  // header region plus a little data
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % b.size();
      const int mode = static_cast<int>(rng() % 3);
      if (mode == 0) b[at] = static_cast<char>(rng());
      if (mode == 1) b[at] = static_cast<char>(0xFF);
      if (mode == 2 && at + 8 <= b.size()) test::PatchU64(&b, at, rng() >> (rng() % 64));
    }
    Parsed p = Parse(b);
    if (!p.file.ok()) {
      ++rejected;
      ASSERT_THAT(std::string(p.file.status().message()), StartsWith("t.gguf: "));
    }
  }
  EXPECT_GT(rejected, 0);  // truncated to data_at + 64, every variant lacks tensor bytes
  EXPECT_EQ(rejected, 3000);
}

// The real model, when present (TESSERA_TEST_MODEL); the Python test compares every field with
// the gguf package.
TEST(GgufRealModelTest, SmolLM2Shapes) {
  const char* path = std::getenv("TESSERA_TEST_MODEL");
  if (path == nullptr || access(path, R_OK) != 0) {
    GTEST_SKIP() << "real model not found (set TESSERA_TEST_MODEL; scripts/fetch-model fetches "
                    "SmolLM2-135M-Instruct.Q4_1.gguf)";
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->tensors().size(), 272u);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetU32("llama.block_count"), 30u);
  EXPECT_EQ((*f)->GetStringArray("tokenizer.ggml.tokens")->size(), 49152u);
  EXPECT_EQ((*f)->GetIntArray("tokenizer.ggml.token_type")->size(), 49152u);
  const GgufTensorInfo* embd = (*f)->FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type(), GgmlType::kQ8_0);
  EXPECT_EQ(embd->ne, (std::array<int64_t, 4>{576, 49152, 1, 1}));
  EXPECT_EQ(embd->nbytes, 576u / 32 * 34 * 49152);
  EXPECT_EQ(embd->file_offset, 1785664u);
  const GgufTensorInfo* down = (*f)->FindTensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->type(), GgmlType::kQ4_1);
  EXPECT_EQ(down->ne, (std::array<int64_t, 4>{1536, 576, 1, 1}));
}

}  // namespace
}  // namespace tessera
