// tessera inspect MODEL [--json] [--tensors]: describes a GGUF file: format, architecture,
// llama config, metadata, bytes per quant type and bits per weight. Any GGUF the reader accepts
// is described; the config section needs the llama architecture.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "model/config.h"
#include "model/gguf.h"

namespace tessera::cli {
namespace {

constexpr char kUsage[] =
    "usage: tessera inspect MODEL.gguf [--json] [--tensors]\n"
    "\n"
    "Describes a GGUF model: GGUF version, architecture, llama config, metadata, tensor count,\n"
    "per quantization type the tensors, elements and bytes, and bits per weight.\n"
    "  --json     machine-readable output (all metadata values in full)\n"
    "  --tensors  also list every tensor: name, type, shape (ne[0] first), offset, bytes\n";

struct TypeTotals {
  int64_t tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
};

struct Summary {
  std::map<std::string, TypeTotals> by_type;  // by ggml type name
  TypeTotals all;
  TypeTotals matrices;  // 2-D tensors: the weight matrices
};

Summary Summarize(const GgufFile& f) {
  Summary s;
  for (const GgufTensorInfo& t : f.tensors()) {
    for (TypeTotals* tt : {&s.by_type[t.traits->name], &s.all}) {
      tt->tensors += 1;
      tt->elements += t.n_elems();
      tt->bytes += t.nbytes;
    }
    if (t.n_dims == 2) {
      s.matrices.tensors += 1;
      s.matrices.elements += t.n_elems();
      s.matrices.bytes += t.nbytes;
    }
  }
  return s;
}

double BitsPerWeight(const TypeTotals& t) {
  return t.elements ? 8.0 * static_cast<double>(t.bytes) / static_cast<double>(t.elements) : 0.0;
}

// ---- JSON output (hand-written: the project has no JSON dependency) ----

// A JSON string literal. Invalid UTF-8 bytes become U+FFFD so the output always parses.
std::string JsonString(std::string_view s) {
  std::string out = "\"";
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      // Copy one well-formed multi-byte sequence, or emit U+FFFD for one bad byte.
      int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
      bool ok = len > 0 && c <= 0xF4 && i + len <= s.size();
      for (int k = 1; ok && k < len; ++k)
        ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
      if (ok && len == 3) {
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
      }
      if (ok && len == 4) {
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
      }
      if (ok) {
        out.append(s.data() + i, len);
        i += len;
      } else {
        out += "\xEF\xBF\xBD";
        ++i;
      }
    }
  }
  return out + "\"";
}

std::string JsonDouble(double d, bool single_precision) {
  if (std::isnan(d)) return "\"nan\"";
  if (std::isinf(d)) return d > 0 ? "\"inf\"" : "\"-inf\"";
  return absl::StrFormat(single_precision ? "%.9g" : "%.17g", d);
}

void AppendJsonValue(const GgufValue& v, std::string* out) {
  switch (v.type()) {
    case GgufValueType::kString:
      *out += JsonString(*v.AsString());
      return;
    case GgufValueType::kBool:
      *out += *v.AsBool() ? "true" : "false";
      return;
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      *out += JsonDouble(*v.AsF64(), v.type() == GgufValueType::kFloat32);
      return;
    case GgufValueType::kArray:
      *out += "[";
      for (uint64_t i = 0; i < v.size(); ++i) {
        if (i) *out += ",";
        AppendJsonValue(v.element(i), out);
      }
      *out += "]";
      return;
    default:
      if (absl::StatusOr<int64_t> i = v.AsI64(); i.ok()) {
        absl::StrAppend(out, *i);
      } else {
        absl::StrAppend(out, *v.AsU64());
      }
  }
}

std::string JsonTotals(const TypeTotals& t) {
  return absl::StrCat("{\"tensors\": ", t.tensors, ", \"elements\": ", t.elements,
                      ", \"bytes\": ", t.bytes,
                      ", \"bits_per_weight\": ", JsonDouble(BitsPerWeight(t), false), "}");
}

std::string JsonConfig(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  return absl::StrCat(
      "{\"architecture\": ", JsonString(c.architecture), ", \"name\": ", JsonString(c.name),
      ", \"n_embd\": ", c.n_embd, ", \"n_layers\": ", c.n_layers, ", \"n_heads\": ", c.n_heads,
      ", \"n_kv_heads\": ", c.n_kv_heads, ", \"head_dim\": ", c.head_dim, ", \"n_rot\": ", c.n_rot,
      ", \"n_ff\": ", c.n_ff, ", \"n_vocab\": ", c.n_vocab, ", \"n_ctx\": ", c.n_ctx,
      ", \"rope_freq_base\": ", JsonDouble(c.rope_freq_base, true),
      ", \"rms_norm_eps\": ", JsonDouble(c.rms_norm_eps, true),
      ", \"rope_scaling\": {\"type\": ", JsonString(r.type),
      ", \"factor\": ", JsonDouble(r.factor, true),
      ", \"original_context_length\": ", r.original_context_length,
      ", \"low_freq_factor\": ", JsonDouble(r.low_freq_factor, true),
      ", \"high_freq_factor\": ", JsonDouble(r.high_freq_factor, true),
      ", \"has_rope_freqs_tensor\": ", r.has_rope_freqs_tensor ? "true" : "false",
      "}, \"tied_output\": ", c.tied_output ? "true" : "false", "}");
}

std::string Shape(const GgufTensorInfo& t) {
  std::string s = "[";
  for (int d = 0; d < t.n_dims; ++d) absl::StrAppend(&s, d ? ", " : "", t.ne[d]);
  return s + "]";
}

void PrintJson(const GgufFile& f, const absl::StatusOr<ModelConfig>& config, const Summary& s,
               bool tensors) {
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"file\": ", JsonString(f.path()), ",\n");
  absl::StrAppend(&out, "  \"file_size\": ", f.file_size(), ",\n");
  absl::StrAppend(&out, "  \"gguf_version\": ", f.version(), ",\n");
  absl::StrAppend(&out, "  \"alignment\": ", f.alignment(), ",\n");
  absl::StrAppend(&out, "  \"data_offset\": ", f.data_offset(), ",\n");
  absl::StatusOr<std::string_view> arch = f.GetString("general.architecture");
  absl::StatusOr<std::string_view> name = f.GetString("general.name");
  absl::StrAppend(&out, "  \"architecture\": ", arch.ok() ? JsonString(*arch) : "null", ",\n");
  absl::StrAppend(&out, "  \"name\": ", name.ok() ? JsonString(*name) : "null", ",\n");
  if (config.ok()) {
    absl::StrAppend(&out, "  \"config\": ", JsonConfig(*config), ",\n");
  } else {
    absl::StrAppend(&out, "  \"config\": null,\n  \"config_error\": ",
                    JsonString(std::string(config.status().message())), ",\n");
  }
  out += "  \"metadata\": {";
  bool first = true;
  for (const GgufKeyValue& kv : f.metadata()) {
    absl::StrAppend(&out, first ? "\n" : ",\n", "    ", JsonString(kv.key),
                    ": {\"type\": ", JsonString(GgufValueTypeName(kv.value.type())));
    if (kv.value.type() == GgufValueType::kArray) {
      absl::StrAppend(
          &out, ", \"element_type\": ", JsonString(GgufValueTypeName(kv.value.element_type())));
    }
    out += ", \"value\": ";
    AppendJsonValue(kv.value, &out);
    out += "}";
    first = false;
  }
  out += "\n  },\n";
  absl::StrAppend(&out, "  \"tensor_count\": ", f.tensors().size(), ",\n");
  out += "  \"types\": {";
  first = true;
  for (const auto& [type, totals] : s.by_type) {
    absl::StrAppend(&out, first ? "\n" : ",\n", "    ", JsonString(type), ": ", JsonTotals(totals));
    first = false;
  }
  out += "\n  },\n";
  absl::StrAppend(&out, "  \"total\": ", JsonTotals(s.all), ",\n");
  absl::StrAppend(&out, "  \"matrices\": ", JsonTotals(s.matrices), ",\n");
  absl::StrAppend(&out, "  \"bits_per_weight\": ", JsonDouble(BitsPerWeight(s.all), false), ",\n");
  absl::StrAppend(&out,
                  "  \"matrix_bits_per_weight\": ", JsonDouble(BitsPerWeight(s.matrices), false));
  if (tensors) {
    out += ",\n  \"tensors\": [";
    first = true;
    for (const GgufTensorInfo& t : f.tensors()) {
      absl::StrAppend(&out, first ? "\n" : ",\n", "    {\"name\": ", JsonString(t.name),
                      ", \"type\": ", JsonString(t.traits->name), ", \"type_id\": ", t.raw_type,
                      ", \"shape\": ", Shape(t), ", \"n_elements\": ", t.n_elems(),
                      ", \"offset\": ", t.offset, ", \"file_offset\": ", t.file_offset,
                      ", \"nbytes\": ", t.nbytes, "}");
      first = false;
    }
    out += "\n  ]";
  }
  out += "\n}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

// ---- Text output ----

std::string Human(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  if (bytes >= (uint64_t{1} << 20)) return absl::StrFormat("%.2f MiB", bytes / 1048576.0);
  if (bytes >= (uint64_t{1} << 10)) return absl::StrFormat("%.2f KiB", bytes / 1024.0);
  return absl::StrCat(bytes, " B");
}

void PrintText(const GgufFile& f, const absl::StatusOr<ModelConfig>& config, const Summary& s,
               bool tensors) {
  absl::PrintF("file:          %s (%d bytes, %s)\n", f.path(), f.file_size(), Human(f.file_size()));
  absl::PrintF("GGUF:          version %d, alignment %d, %d metadata keys, data at offset %d\n",
               f.version(), f.alignment(), f.metadata().size(), f.data_offset());
  absl::StatusOr<std::string_view> arch = f.GetString("general.architecture");
  absl::StatusOr<std::string_view> name = f.GetString("general.name");
  absl::PrintF("architecture:  %s\n", arch.ok() ? std::string(*arch) : "(none)");
  absl::PrintF("name:          %s\n", name.ok() ? std::string(*name) : "(none)");
  if (config.ok()) {
    const ModelConfig& c = *config;
    const RopeScaling& r = c.rope_scaling;
    absl::PrintF("config:\n");
    absl::PrintF("  n_embd %d, n_layers %d, n_heads %d, n_kv_heads %d, head_dim %d, n_rot %d\n",
                 c.n_embd, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.n_rot);
    absl::PrintF("  n_ff %d, n_vocab %d, n_ctx %d, rope_freq_base %g, rms_norm_eps %g\n", c.n_ff,
                 c.n_vocab, c.n_ctx, c.rope_freq_base, c.rms_norm_eps);
    absl::PrintF(
        "  rope scaling %s (factor %g, original context %d, low/high freq factor %g/%g)"
        "%s\n",
        r.type, r.factor, r.original_context_length, r.low_freq_factor, r.high_freq_factor,
        r.has_rope_freqs_tensor ? ", rope_freqs.weight present" : "");
    absl::PrintF("  output %s\n", c.tied_output ? "tied to token_embd.weight" : "output.weight");
  } else {
    absl::PrintF("config:        unavailable: %s\n", config.status().message());
  }
  absl::PrintF("metadata:\n");
  for (const GgufKeyValue& kv : f.metadata()) {
    std::string v = kv.value.ToString(4);
    if (v.size() > 100) v = v.substr(0, 97) + "...";
    std::string type = GgufValueTypeName(kv.value.type());
    if (kv.value.type() == GgufValueType::kArray) {
      type = absl::StrCat("ARRAY[", GgufValueTypeName(kv.value.element_type()), "]");
    }
    absl::PrintF("  %-40s %-14s %s\n", kv.key, type, v);
  }
  absl::PrintF("tensors:       %d\n", f.tensors().size());
  absl::PrintF("  %-6s %8s %14s %16s %8s\n", "type", "tensors", "elements", "bytes", "bpw");
  for (const auto& [type, t] : s.by_type) {
    absl::PrintF("  %-6s %8d %14d %16d %8.3f\n", type, t.tensors, t.elements, t.bytes,
                 BitsPerWeight(t));
  }
  absl::PrintF("  %-6s %8d %14d %16d %8.3f\n", "total", s.all.tensors, s.all.elements, s.all.bytes,
               BitsPerWeight(s.all));
  absl::PrintF("total bytes:   %d (%s)\n", s.all.bytes, Human(s.all.bytes));
  absl::PrintF("bits/weight:   %.3f over all tensors, %.3f over the %d 2-D weight matrices\n",
               BitsPerWeight(s.all), BitsPerWeight(s.matrices), s.matrices.tensors);
  if (tensors) {
    absl::PrintF("\n  %-36s %-5s %-20s %12s %12s\n", "name", "type", "shape", "offset", "bytes");
    for (const GgufTensorInfo& t : f.tensors()) {
      absl::PrintF("  %-36s %-5s %-20s %12d %12d\n", t.name, t.traits->name, Shape(t), t.offset,
                   t.nbytes);
    }
  }
}

}  // namespace

int InspectMain(int argc, char** argv) {
  std::string model;
  bool json = false, tensors = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--tensors") {
      tensors = true;
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "tessera inspect: unknown option '%s'\n\n%s", argv[i], kUsage);
      return 2;
    } else if (model.empty()) {
      model = std::string(a);
    } else {
      std::fprintf(stderr, "tessera inspect: more than one model given ('%s', '%s')\n\n%s",
                   model.c_str(), argv[i], kUsage);
      return 2;
    }
  }
  if (model.empty()) {
    std::fprintf(stderr, "tessera inspect: no model given\n\n%s", kUsage);
    return 2;
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(model);
  if (!file.ok()) {
    std::fprintf(stderr, "tessera inspect: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  // The config needs the llama architecture; other architectures are still described.
  const absl::StatusOr<ModelConfig> config = LoadModelConfig(**file);
  const Summary summary = Summarize(**file);
  if (json) {
    PrintJson(**file, config, summary, tensors);
  } else {
    PrintText(**file, config, summary, tensors);
  }
  // A llama model whose config or tensors are inconsistent is an error; another architecture
  // is merely not runnable.
  if (!config.ok() && config.status().code() != absl::StatusCode::kUnimplemented) {
    std::fprintf(stderr, "tessera inspect: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace tessera::cli
