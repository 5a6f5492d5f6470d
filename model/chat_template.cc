#include "model/chat_template.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "model/gguf.h"

namespace tessera {
namespace {

constexpr char kImStart[] = "<|im_start|>";
constexpr char kImEnd[] = "<|im_end|>";
constexpr char kStartHeader[] = "<|start_header_id|>";
constexpr char kEndHeader[] = "<|end_header_id|>";
constexpr char kEotId[] = "<|eot_id|>";

// The literal default system prompt of a ChatML template: the text between
// "<|im_start|>system" + a newline (a real one, or the two characters '\' 'n'
// of a Jinja string escape) and the next "<|im_end|>", if that text is plain
// (no Jinja expression or quote).
std::string ChatMlDefaultSystem(std::string_view jinja) {
  const std::string head = absl::StrCat(kImStart, "system");
  for (size_t pos = jinja.find(head); pos != std::string_view::npos;
       pos = jinja.find(head, pos + 1)) {
    size_t start = pos + head.size();
    if (jinja.substr(start, 1) == "\n") {
      start += 1;
    } else if (jinja.substr(start, 2) == "\\n") {
      start += 2;
    } else {
      continue;
    }
    const size_t end = jinja.find(kImEnd, start);
    if (end == std::string_view::npos) continue;
    const std::string_view text = jinja.substr(start, end - start);
    if (text.empty() || text.find_first_of("{}'\"\\") != std::string_view::npos) continue;
    return std::string(text);
  }
  return "";
}

// Jinja's `trim` filter (Python str.strip()), for the whitespace that occurs in
// practice.
std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view jinja,
                                                     std::string_view source) {
  if (jinja.find(kStartHeader) != std::string_view::npos &&
      jinja.find(kEotId) != std::string_view::npos) {
    return ChatTemplate(ChatFormat::kLlama3, "");
  }
  if (jinja.find(kImStart) != std::string_view::npos) {
    return ChatTemplate(ChatFormat::kChatMl, ChatMlDefaultSystem(jinja));
  }
  const std::string_view head = jinja.substr(0, 120);
  return absl::InvalidArgumentError(absl::StrCat(
      std::string(source), ": unknown chat template (",
      jinja.empty()
          ? std::string("empty")
          : absl::StrCat("begins '", std::string(head), jinja.size() > head.size() ? "...'" : "'"),
      "); Tessera knows ChatML (marker '<|im_start|>') and Llama 3 (markers "
      "'<|start_header_id|>' and '<|eot_id|>')"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromGguf(const GgufFile &file) {
  if (!file.Has("tokenizer.chat_template")) {
    return absl::NotFoundError(absl::StrCat(file.path(),
                                            ": no tokenizer.chat_template in the "
                                            "metadata, so the chat format is unknown"));
  }
  TESSERA_ASSIGN_OR_RETURN(const std::string_view jinja, file.GetString("tokenizer.chat_template"));
  return FromJinja(jinja, absl::StrCat(file.path(), ": tokenizer.chat_template"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name) {
  if (name == "chatml") return ChatTemplate(ChatFormat::kChatMl, "");
  if (name == "llama3") return ChatTemplate(ChatFormat::kLlama3, "");
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat format '", std::string(name), "' (known: chatml, llama3)"));
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("chat message ", i, " has an empty role"));
    }
  }
  std::string out;
  if (format_ == ChatFormat::kChatMl) {
    if (!messages.empty() && messages[0].role != "system" && !default_system_.empty()) {
      absl::StrAppend(&out, kImStart, "system\n", default_system_, kImEnd, "\n");
    }
    for (const ChatMessage &m : messages) {
      absl::StrAppend(&out, kImStart, m.role, "\n", m.content, kImEnd, "\n");
    }
    if (add_generation_prompt) absl::StrAppend(&out, kImStart, "assistant\n");
  } else {
    for (const ChatMessage &m : messages) {
      const std::string_view content = Trim(m.content);
      absl::StrAppend(&out, kStartHeader, m.role, kEndHeader, "\n\n",
                      absl::string_view(content.data(), content.size()), kEotId);
    }
    if (add_generation_prompt) absl::StrAppend(&out, kStartHeader, "assistant", kEndHeader, "\n\n");
  }
  return out;
}

}  // namespace tessera
