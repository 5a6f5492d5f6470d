#include "coordinator/prepare_request.h"

#include <algorithm>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "model/unicode.h"
#include "worker/step_runner.h"

namespace tessera {
namespace {

constexpr const char* kRoles[] = {"system", "user", "assistant"};

// Quotes a client's string for an error message, cut to 40 bytes.
std::string Quote(const std::string& s) {
  if (s.size() <= 40) return absl::StrCat("\"", s, "\"");
  return absl::StrCat("\"", s.substr(0, 40), "...\" (", s.size(), " bytes)");
}

absl::StatusOr<std::vector<int32_t>> TokenizeChat(const ServedModel& model, const v1::Chat& chat) {
  if (chat.messages().empty()) {
    return absl::InvalidArgumentError("chat.messages is empty: give at least one message");
  }
  if (!model.chat_template.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat: model ", model.name, " has no usable chat template (",
                     model.chat_template_error, "); send a prompt instead"));
  }
  std::vector<ChatMessage> messages;
  messages.reserve(chat.messages_size());
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (std::find(std::begin(kRoles), std::end(kRoles), m.role()) == std::end(kRoles)) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat.messages[", i, "].role = ", Quote(m.role()),
                       " is not a known role (system, user or assistant)"));
    }
    messages.push_back({m.role(), m.content()});
  }
  TESSERA_ASSIGN_OR_RETURN(std::string text,
                           model.chat_template->Render(messages, /*add_generation_prompt=*/true));
  return model.tokenizer->Encode(text, /*add_special=*/true, /*parse_special=*/true);
}

absl::StatusOr<std::vector<int32_t>> TokenizeText(const ServedModel& model, const std::string& text,
                                                  bool add_special, const char* field) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is empty: give a ", field, " or chat messages"));
  }
  return model.tokenizer->Encode(text, add_special, /*parse_special=*/false);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const ServedModel& model,
                                                    const v1::GenerateRequest& request) {
  if (request.has_chat()) return TokenizeChat(model, request.chat());
  return TokenizeText(model, request.prompt(), /*add_special=*/true, "prompt");
}

absl::StatusOr<std::vector<int32_t>> TokenizeInput(const ServedModel& model,
                                                   const v1::TokenizeRequest& request) {
  if (request.has_chat()) return TokenizeChat(model, request.chat());
  return TokenizeText(model, request.text(), request.add_special(), "text");
}

absl::StatusOr<ScheduledRequest> PrepareRequest(const ServedModel& model,
                                                const v1::GenerateRequest& request,
                                                const PrepareOptions& options) {
  // Cheap field checks first, so a bad parameter is reported without tokenizing.
  if (request.input_case() == v1::GenerateRequest::INPUT_NOT_SET) {
    return absl::InvalidArgumentError("prompt is empty: give a prompt or chat messages");
  }
  if (request.logprobs() > static_cast<uint32_t>(SamplingParams::kMaxLogprobs)) {
    return absl::InvalidArgumentError(absl::StrCat("logprobs = ", request.logprobs(),
                                                   " is out of range: at most ",
                                                   SamplingParams::kMaxLogprobs));
  }
  ScheduledRequest out;
  TESSERA_ASSIGN_OR_RETURN(
      out.sampling,
      SamplingParamsFromProto(request.sampling(), request.logprobs(), request.logprob_of_chosen()));
  if (!request.sampling().has_seed()) out.sampling.seed = std::random_device()();
  out.logprobs = request.logprobs();
  out.logprob_of_chosen = request.logprob_of_chosen() || request.logprobs() > 0;

  const int64_t n_vocab = model.config.n_vocab;
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    const int32_t id = request.stop_token_ids(i);
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "] = ", id,
                                                     " is not a token id (0..", n_vocab - 1, ")"));
    }
  }
  out.stop.eos_token_ids = model.eos_token_ids;
  out.stop.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  out.stop.stop_strings.assign(request.stop().begin(), request.stop().end());
  TESSERA_RETURN_IF_ERROR(out.stop.Validate());

  if (request.request_id().size() > PrepareOptions::kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id is ", request.request_id().size(),
                                                   " bytes long, at most ",
                                                   PrepareOptions::kMaxRequestIdBytes));
  }
  out.id = request.request_id();

  TESSERA_ASSIGN_OR_RETURN(out.prompt, TokenizePrompt(model, request));
  const int64_t n_ctx = model.config.n_ctx;
  const int64_t n_prompt = static_cast<int64_t>(out.prompt.size());
  if (n_prompt == 0) {
    return absl::InvalidArgumentError("prompt: the input tokenizes to no tokens");
  }
  if (n_prompt >= n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt: ", n_prompt, " tokens; the model's context is ", n_ctx,
        " tokens, which leaves no room to generate (at most ", n_ctx - 1, " prompt tokens)"));
  }
  const int64_t room = n_ctx - n_prompt;
  if (request.max_tokens() > 0) {
    if (request.max_tokens() > room) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_tokens = ", request.max_tokens(), " with a prompt of ", n_prompt,
          " tokens exceeds the model's context of ", n_ctx, " tokens (at most ", room, ")"));
    }
    out.stop.max_tokens = static_cast<int32_t>(request.max_tokens());
  } else {
    out.stop.max_tokens = static_cast<int32_t>(
        std::min<int64_t>(std::max<uint32_t>(options.default_max_tokens, 1), room));
  }
  return out;
}

std::string TokenPiece(const Tokenizer& tokenizer, int32_t id) {
  absl::StatusOr<std::string> bytes = tokenizer.TokenBytes(id, /*render_special=*/true);
  if (!bytes.ok()) return "";
  std::string out;
  std::string_view rest(*bytes);
  while (!rest.empty()) {
    size_t len = 0;
    if (ScanUtf8(rest, &len) == Utf8Scan::kComplete) {
      out.append(rest.data(), len);
    } else {
      len = 1;  // one byte at a time, so each shows as its own <0xNN>
      out += absl::StrFormat("<0x%02X>", static_cast<unsigned char>(rest[0]));
    }
    rest.remove_prefix(len);
  }
  return out;
}

}  // namespace tessera
