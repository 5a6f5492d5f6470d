// From a client's GenerateRequest / TokenizeRequest (generate.proto) to what the scheduler
// runs: every field validated (InvalidArgument naming the field and the offending value), the
// prompt tokenized exactly as in-process `tessera generate` does it (raw text: BOS when the
// model wants one, control-token text kept as text; chat: the model's chat template, rendered
// text parsed for its control tokens), max_tokens resolved against the context.
//
// Pure functions of the model and the request; thread-safe.
#ifndef TESSERA_COORDINATOR_PREPARE_REQUEST_H_
#define TESSERA_COORDINATOR_PREPARE_REQUEST_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/request.h"
#include "coordinator/served_model.h"
#include "tessera/v1/generate.pb.h"

namespace tessera {

struct PrepareOptions {
  // max_tokens when the request leaves it 0, cut to what the context leaves after the prompt.
  uint32_t default_max_tokens = 256;
  static constexpr size_t kMaxRequestIdBytes = 256;
};

// The token ids of a prompt or a chat (see the file comment). `add_special` applies to text
// only (chat always adds what the template and tokenizer ask for). Errors: an empty input, an
// empty chat, a role other than system/user/assistant, a model without a chat template.
absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const ServedModel& model,
                                                    const v1::GenerateRequest& request);
absl::StatusOr<std::vector<int32_t>> TokenizeInput(const ServedModel& model,
                                                   const v1::TokenizeRequest& request);

// A validated, tokenized request (its id, stream and received time left to the caller).
// Checks, in order: input, logprobs (0..20), sampling fields, stop strings and stop token ids,
// request_id length, prompt length against the context, max_tokens against the context.
// A request without a seed gets a random one (as in-process generate does).
absl::StatusOr<ScheduledRequest> PrepareRequest(const ServedModel& model,
                                                const v1::GenerateRequest& request,
                                                const PrepareOptions& options);

// A token's text for TokenizeResponse.pieces: its bytes (control tokens rendered), each byte
// that is not part of a valid UTF-8 character written as <0xNN>.
std::string TokenPiece(const Tokenizer& tokenizer, int32_t id);

}  // namespace tessera

#endif  // TESSERA_COORDINATOR_PREPARE_REQUEST_H_
