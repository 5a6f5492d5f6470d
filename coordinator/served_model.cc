#include "coordinator/served_model.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

// The file name of `path` without directories and without ".gguf".
std::string Stem(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string s = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string ext = ".gguf";
  if (s.size() > ext.size() && s.compare(s.size() - ext.size(), ext.size(), ext) == 0) {
    s.resize(s.size() - ext.size());
  }
  return s;
}

// The type holding the most bytes among the file's tensors ("Q4_1"), for files without
// general.file_type.
std::string CommonestType(const GgufFile& file) {
  std::map<std::string, uint64_t> bytes;
  for (const GgufTensorInfo& t : file.tensors()) bytes[GgmlTypeName(t.raw_type)] += t.nbytes;
  std::string best;
  uint64_t most = 0;
  for (const auto& [name, n] : bytes) {
    if (n > most) best = name, most = n;
  }
  return best.empty() ? "unknown" : best;
}

}  // namespace

std::string GgufFileTypeName(uint32_t file_type) {
  // llama.cpp's llama_ftype values as written to general.file_type (gaps are retired ids).
  static const std::map<uint32_t, const char*> kNames = {
      {0, "F32"},      {1, "F16"},      {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},
      {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},
      {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},
      {18, "Q6_K"},    {19, "IQ2_XXS"}, {20, "IQ2_XS"}, {21, "Q2_K_S"}, {22, "IQ3_XS"},
      {23, "IQ3_XXS"}, {24, "IQ1_S"},   {25, "IQ4_NL"}, {26, "IQ3_S"},  {27, "IQ3_M"},
      {28, "IQ2_S"},   {29, "IQ2_M"},   {30, "IQ4_XS"}, {31, "IQ1_M"},  {32, "BF16"},
  };
  auto it = kNames.find(file_type);
  return it == kNames.end() ? "" : it->second;
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Open(const std::string& path) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return FromGguf(*file);
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::FromGguf(const GgufFile& file) {
  TESSERA_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(file));
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromGguf(file));
  std::optional<ChatTemplate> chat;
  std::string chat_error;
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromGguf(file);
  if (t.ok()) {
    chat = *std::move(t);
  } else {
    chat_error = std::string(t.status().message());
  }
  std::string quant;
  absl::StatusOr<uint32_t> ftype = file.GetU32("general.file_type");
  if (ftype.ok()) quant = GgufFileTypeName(*ftype);
  if (quant.empty()) quant = CommonestType(file);
  const std::string name = config.name.empty() ? Stem(file.path()) : config.name;
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<ServedModel> m,
                           FromParts(name, quant, config, std::move(tokenizer), std::move(chat)));
  m->path = file.path();
  m->chat_template_error = chat_error;
  return m;
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::FromParts(
    std::string name, std::string quantization, ModelConfig config,
    std::unique_ptr<Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template) {
  if (tokenizer == nullptr) return absl::InvalidArgumentError("ServedModel: no tokenizer");
  if (tokenizer->n_tokens() > config.n_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the tokenizer has ", tokenizer->n_tokens(),
                     " tokens but the model's vocabulary (logits) only ", config.n_vocab));
  }
  if (config.n_ctx < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": context length ", config.n_ctx, " leaves no room to generate"));
  }
  auto m = std::make_unique<ServedModel>();
  m->name = std::move(name);
  m->architecture = config.architecture;
  m->quantization = std::move(quantization);
  m->config = std::move(config);
  m->tokenizer = std::move(tokenizer);
  m->chat_template = std::move(chat_template);
  if (!m->chat_template.has_value()) m->chat_template_error = "the model has no chat template";
  for (int32_t id = 0; id < m->tokenizer->n_tokens(); ++id) {
    if (m->tokenizer->IsEndOfGeneration(id)) m->eos_token_ids.push_back(id);
  }
  return m;
}

}  // namespace tessera
