// ChatTemplate: turns a conversation into the prompt text a chat model was trained on.
//
// GGUF files carry the template as Jinja source (tokenizer.chat_template). Tessera does not run
// Jinja; it recognises the template's family by its distinctive markers and renders that family
// in C++:
//   ChatML ('<|im_start|>', SmolLM2, Qwen...):
//       <|im_start|>{role}\n{content}<|im_end|>\n  per message, then <|im_start|>assistant\n.
//       If the template spells out a default system prompt ("<|im_start|>system\n...<|im_end|>"
//       as a literal, like SmolLM2's "You are a helpful AI assistant named SmolLM...") it is
//       inserted before a conversation whose first message is not a system message.
//   Llama 3 ('<|start_header_id|>'):
//       <|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|> per message,
//       then <|start_header_id|>assistant<|end_header_id|>\n\n. The template's leading
//       bos_token is NOT part of the text: Tokenizer::Encode(add_special=true) adds BOS.
// The rendered text must be encoded with parse_special=true so the markers become their
// control tokens (and message contents can therefore inject markers, as with llama.cpp).
//
// Thread-safety: immutable; Render() may be called concurrently.
#ifndef TESSERA_MODEL_CHAT_TEMPLATE_H_
#define TESSERA_MODEL_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

class GgufFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatFormat { kChatMl, kLlama3 };

class ChatTemplate {
 public:
  // Recognises `jinja_source`; an unknown template is an InvalidArgument error that quotes its
  // beginning and names the markers looked for. `source` names it in messages.
  static absl::StatusOr<ChatTemplate> FromJinja(std::string_view jinja_source,
                                                std::string_view source = "chat template");
  // From tokenizer.chat_template (an error naming the file if the key is absent).
  static absl::StatusOr<ChatTemplate> FromGguf(const GgufFile& file);
  // A named format ("chatml" or "llama3"), for models without a template.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  ChatFormat format() const { return format_; }
  const std::string& default_system_prompt() const { return default_system_; }  // ChatML

  // The prompt for `messages`, followed by the assistant's header when `add_generation_prompt`.
  // Fails on a message with an empty role.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

 private:
  ChatTemplate(ChatFormat format, std::string default_system)
      : format_(format), default_system_(std::move(default_system)) {}
  ChatFormat format_;
  std::string default_system_;  // empty: none
};

}  // namespace tessera

#endif  // TESSERA_MODEL_CHAT_TEMPLATE_H_
