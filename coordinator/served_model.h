// ServedModel: what the coordinator knows of the model it serves, read from the GGUF metadata
// alone (no weight pages are touched): its name, architecture and quantization for
// GetModelInfo, the config (context length, vocabulary size) for validation, and the tokenizer
// and chat template that turn requests into token ids. The workers load the weights; the
// coordinator only tokenizes and detokenizes.
//
// Thread-safety: immutable after creation; every member may be read concurrently.
#ifndef TESSERA_COORDINATOR_SERVED_MODEL_H_
#define TESSERA_COORDINATOR_SERVED_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace tessera {

struct ServedModel {
  std::string path;          // the GGUF file ("" when built in memory)
  std::string name;          // general.name, else the file name without ".gguf"
  std::string architecture;  // "llama"
  std::string quantization;  // from general.file_type ("Q4_1"), else the commonest tensor type
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;       // never null; n_tokens() <= config.n_vocab
  std::optional<ChatTemplate> chat_template;  // absent: chat requests are refused, saying why
  std::string chat_template_error;            // why it is absent
  std::vector<int32_t> eos_token_ids;         // Tokenizer::IsEndOfGeneration ids, ascending

  // Opens `path`, reads the config (checking every tensor's shape), the tokenizer and the chat
  // template. Errors name the file.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Open(const std::string& path);
  static absl::StatusOr<std::unique_ptr<ServedModel>> FromGguf(const GgufFile& file);
  // From parts (tests, synthetic models); derives eos_token_ids and checks the vocabulary fits.
  static absl::StatusOr<std::unique_ptr<ServedModel>> FromParts(
      std::string name, std::string quantization, ModelConfig config,
      std::unique_ptr<Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template);
};

// The name of a GGUF general.file_type value (llama.cpp's llama_ftype numbering: 2 = "Q4_0",
// 3 = "Q4_1", 15 = "Q4_K_M", ...), or "" for a value this table does not know.
std::string GgufFileTypeName(uint32_t file_type);

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_SERVED_MODEL_H_
