#include "tests/model/gguf_writer_testutil.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "absl/strings/str_cat.h"

namespace tessera::test {
namespace {

template <typename T>
std::string LittleEndian(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));  // the test hosts are little-endian, like the format
  return s;
}

void Put32(std::string* out, uint32_t v) { *out += LittleEndian(v); }
void Put64(std::string* out, uint64_t v) { *out += LittleEndian(v); }
void PutString(std::string* out, const std::string& s) {
  Put64(out, s.size());
  *out += s;
}

// Value body (without its type word).
void PutValue(std::string* out, const TestValue& v) {
  if (v.type == kTString) {
    Put64(out, v.length_override.value_or(v.bytes.size()));
    *out += v.bytes;
  } else if (v.type == kTArray) {
    Put32(out, v.element_type);
    Put64(out, v.length_override.value_or(v.elements.size()));
    for (const TestValue& e : v.elements) PutValue(out, e);
  } else {
    *out += v.bytes;
  }
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

TestValue TestValue::U8(uint8_t v) { return Raw(kTU8, LittleEndian(v)); }
TestValue TestValue::I8(int8_t v) { return Raw(kTI8, LittleEndian(v)); }
TestValue TestValue::U16(uint16_t v) { return Raw(kTU16, LittleEndian(v)); }
TestValue TestValue::I16(int16_t v) { return Raw(kTI16, LittleEndian(v)); }
TestValue TestValue::U32(uint32_t v) { return Raw(kTU32, LittleEndian(v)); }
TestValue TestValue::I32(int32_t v) { return Raw(kTI32, LittleEndian(v)); }
TestValue TestValue::U64(uint64_t v) { return Raw(kTU64, LittleEndian(v)); }
TestValue TestValue::I64(int64_t v) { return Raw(kTI64, LittleEndian(v)); }
TestValue TestValue::F32(float v) { return Raw(kTF32, LittleEndian(v)); }
TestValue TestValue::F64(double v) { return Raw(kTF64, LittleEndian(v)); }
TestValue TestValue::Bool(bool v) { return Raw(kTBool, std::string(1, v ? '\1' : '\0')); }
TestValue TestValue::Str(std::string v) { return Raw(kTString, std::move(v)); }
TestValue TestValue::Array(uint32_t element_type, std::vector<TestValue> elements) {
  TestValue t;
  t.type = kTArray;
  t.element_type = element_type;
  t.elements = std::move(elements);
  return t;
}
TestValue TestValue::Raw(uint32_t type, std::string bytes) {
  TestValue t;
  t.type = type;
  t.bytes = std::move(bytes);
  return t;
}

uint64_t NaturalTensorBytes(uint32_t type, const std::vector<uint64_t>& ne) {
  // (elements, bytes) per block, from the ggml block layouts.
  struct Geometry {
    uint32_t type;
    uint64_t elems, bytes;
  };
  static constexpr Geometry kGeometry[] = {
      {0, 1, 4},      {1, 1, 2},      {2, 32, 18},    {3, 32, 20},    {6, 32, 22},
      {7, 32, 24},    {8, 32, 34},    {9, 32, 36},    {10, 256, 84},  {11, 256, 110},
      {12, 256, 144}, {13, 256, 176}, {14, 256, 210}, {15, 256, 292}, {30, 1, 2},
  };
  for (const Geometry& g : kGeometry) {
    if (g.type != type) continue;
    uint64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
    return ne.empty() ? 0 : ne[0] / g.elems * g.bytes * rows;
  }
  return 0;
}

GgufWriter& GgufWriter::Add(std::string key, TestValue v) {
  kvs.emplace_back(std::move(key), std::move(v));
  return *this;
}

GgufWriter& GgufWriter::SetAlignment(uint32_t a) {
  alignment = a;
  return Add("general.alignment", TestValue::U32(a));
}

GgufWriter& GgufWriter::AddTensor(std::string name, uint32_t type, std::vector<uint64_t> ne,
                                  std::string data) {
  TestTensor t;
  t.name = std::move(name);
  t.type = type;
  t.ne = std::move(ne);
  t.data = std::move(data);
  tensors.push_back(std::move(t));
  return *this;
}

std::string GgufWriter::Build(GgufLayout* layout) const {
  GgufLayout lay;
  std::string out = "GGUF";
  Put32(&out, version);
  Put64(&out, tensor_count_override.value_or(tensors.size()));
  Put64(&out, kv_count_override.value_or(kvs.size()));
  for (const auto& [key, value] : kvs) {
    lay.kv_at.push_back(out.size());
    PutString(&out, key);
    Put32(&out, value.type);
    PutValue(&out, value);
  }
  // Lay out the tensor data first so the infos can carry offsets.
  const uint64_t a = alignment == 0 ? 1 : alignment;
  std::vector<std::string> datas;
  std::vector<uint64_t> offsets;
  uint64_t cursor = 0;
  for (const TestTensor& t : tensors) {
    std::string d = t.data.empty() ? std::string(NaturalTensorBytes(t.type, t.ne), '\0') : t.data;
    cursor = AlignUp(cursor, a);
    offsets.push_back(cursor);
    cursor += d.size();
    datas.push_back(std::move(d));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TestTensor& t = tensors[i];
    lay.tensor_info_at.push_back(out.size());
    PutString(&out, t.name);
    Put32(&out, t.n_dims_override.value_or(static_cast<uint32_t>(t.ne.size())));
    for (uint64_t n : t.ne) Put64(&out, n);
    Put32(&out, t.type);
    lay.tensor_offset_at.push_back(out.size());
    Put64(&out, t.offset_override.value_or(offsets[i]));
  }
  lay.data_at = AlignUp(out.size(), a);
  if (!tensors.empty()) out.resize(lay.data_at, '\0');
  for (size_t i = 0; i < tensors.size(); ++i) {
    out.resize(lay.data_at + offsets[i], '\0');
    lay.tensor_data_at.push_back(out.size());
    out += datas[i];
  }
  if (layout != nullptr) *layout = std::move(lay);
  return out;
}

void PatchU32(std::string* bytes, size_t at, uint32_t v) { std::memcpy(bytes->data() + at, &v, 4); }
void PatchU64(std::string* bytes, size_t at, uint64_t v) { std::memcpy(bytes->data() + at, &v, 8); }

GgufWriter TinyLlamaWriter() {
  constexpr uint64_t kEmbd = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 16, kFf = 96, kVocab = 40;
  constexpr uint32_t kF32 = 0, kQ4_0 = 2, kQ8_0 = 8;
  GgufWriter w;
  w.Add("general.architecture", TestValue::Str("llama"))
      .Add("general.name", TestValue::Str("tiny"))
      .Add("llama.block_count", TestValue::U32(2))
      .Add("llama.context_length", TestValue::U32(256))
      .Add("llama.embedding_length", TestValue::U32(kEmbd))
      .Add("llama.feed_forward_length", TestValue::U32(kFf))
      .Add("llama.attention.head_count", TestValue::U32(kHeads))
      .Add("llama.attention.head_count_kv", TestValue::U32(kKvHeads))
      .Add("llama.rope.freq_base", TestValue::F32(500000.0f))
      .Add("llama.attention.layer_norm_rms_epsilon", TestValue::F32(1e-6f));
  std::vector<TestValue> tokens;
  for (uint64_t i = 0; i < kVocab; ++i) tokens.push_back(TestValue::Str(absl::StrCat("t", i)));
  w.Add("tokenizer.ggml.tokens", TestValue::Array(kTString, std::move(tokens)));
  w.AddTensor("token_embd.weight", kQ8_0, {kEmbd, kVocab});
  w.AddTensor("output_norm.weight", kF32, {kEmbd});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.AddTensor(p + "attn_norm.weight", kF32, {kEmbd});
    w.AddTensor(p + "attn_q.weight", kQ4_0, {kEmbd, kHeads * kHeadDim});
    w.AddTensor(p + "attn_k.weight", kQ4_0, {kEmbd, kKvHeads * kHeadDim});
    w.AddTensor(p + "attn_v.weight", kQ4_0, {kEmbd, kKvHeads * kHeadDim});
    w.AddTensor(p + "attn_output.weight", kQ4_0, {kHeads * kHeadDim, kEmbd});
    w.AddTensor(p + "ffn_norm.weight", kF32, {kEmbd});
    w.AddTensor(p + "ffn_gate.weight", kQ4_0, {kEmbd, kFf});
    w.AddTensor(p + "ffn_up.weight", kQ4_0, {kEmbd, kFf});
    w.AddTensor(p + "ffn_down.weight", kQ4_0, {kFf, kEmbd});
  }
  return w;
}

std::string WriteTempFile(const std::string& bytes, const std::string& stem) {
  const char* dir = std::getenv("TEST_TMPDIR");
  if (dir == nullptr) dir = std::getenv("TMPDIR");
  if (dir == nullptr) dir = "/tmp";
  std::string path = std::string(dir) + "/" + stem + "_XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) throw std::runtime_error("mkstemp failed for " + path);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  return path;
}

}  // namespace tessera::test
