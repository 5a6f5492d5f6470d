// tessera generate: one completion of a prompt or a chat message, streamed to stdout with its
// timing on stderr: on the local CPU engine, or with --server ADDR from a coordinator over gRPC
// (the same prompt, sampling and stop flags; the model is the server's).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/grpc_client.h"
#include "coordinator/request.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/status_macros.h"
#include "model/chat_template.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace tessera::cli {

std::string DefaultModelPath() {
  const char* dir = std::getenv("TESSERA_MODEL_DIR");
  const char* home = std::getenv("HOME");
  const std::string base = dir != nullptr ? std::string(dir)
                                          : absl::StrCat(home ? home : ".", "/.cache/tessera/models");
  return base + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

namespace {

struct GenerateOptions {
  std::string model, prompt, chat, system, server, kv_type = "auto";
  double timeout_s = 600;
  int64_t max_tokens = 256, threads = 2, top_k = 40, seed = -1, logprobs = 0;
  int64_t kv_memory_mib = 256;
  double temperature = 0.8, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0;
  double frequency_penalty = 0.0, presence_penalty = 0.0;
  std::vector<std::string> stop;
  bool has_prompt = false, has_chat = false, exact = false;
};

absl::Status Run(const GenerateOptions& o) {
  if (o.has_prompt == o.has_chat) {
    return absl::InvalidArgumentError("give exactly one of -p PROMPT or --chat MESSAGE");
  }
  if (o.has_chat && o.chat.empty()) {
    return absl::InvalidArgumentError("the chat message is empty");
  }
  const std::string path = o.model.empty() ? DefaultModelPath() : o.model;
  absl::StatusOr<OpenedModel> opened = OpenGgufModel(path);
  if (!opened.ok() && o.model.empty()) {
    return absl::NotFoundError(absl::StrCat(opened.status().message(),
                                            " (the default model: run scripts/fetch-model)"));
  }
  if (!opened.ok()) return opened.status();
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                           Tokenizer::FromGguf(*opened->file));

  std::vector<int32_t> ids;
  if (o.has_chat) {
    TESSERA_ASSIGN_OR_RETURN(ChatTemplate tmpl, ChatTemplate::FromGguf(*opened->file));
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.chat});
    TESSERA_ASSIGN_OR_RETURN(std::string text, tmpl.Render(messages, true));
    TESSERA_ASSIGN_OR_RETURN(ids, tokenizer->Encode(text, true, /*parse_special=*/true));
  } else {
    TESSERA_ASSIGN_OR_RETURN(ids, tokenizer->Encode(o.prompt, true, /*parse_special=*/false));
  }

  GenerateRequest req;
  req.prompt = ids;
  req.max_tokens = o.max_tokens;
  req.stop = o.stop;
  SamplingParams& s = req.sampling;
  s.temperature = static_cast<float>(o.temperature);
  s.top_k = static_cast<int32_t>(o.top_k);
  s.top_p = static_cast<float>(o.top_p);
  s.min_p = static_cast<float>(o.min_p);
  s.repetition_penalty = static_cast<float>(o.repeat_penalty);
  s.frequency_penalty = static_cast<float>(o.frequency_penalty);
  s.presence_penalty = static_cast<float>(o.presence_penalty);
  s.n_logprobs = static_cast<int32_t>(o.logprobs);
  s.seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device()();
  TESSERA_RETURN_IF_ERROR(s.Validate());

  CpuBackend backend(static_cast<int>(o.threads), /*exact_matmul=*/o.exact);
  EngineOptions eo;
  eo.kv_budget_bytes = o.kv_memory_mib << 20;
  TESSERA_ASSIGN_OR_RETURN(eo.kv_type, ParseKvType(o.kv_type));
  TESSERA_ASSIGN_OR_RETURN(
      std::unique_ptr<Engine> engine,
      Engine::Create(*opened->weights, ModelShard::Whole(opened->weights->config()), &backend,
                     nullptr, eo));
  TESSERA_ASSIGN_OR_RETURN(GenerateResult r,
                           Generate(*engine, *tokenizer, req, 1, [](std::string_view piece) {
                             std::fwrite(piece.data(), 1, piece.size(), stdout);
                             std::fflush(stdout);
                           }));
  std::printf("\n");
  const int64_t n = static_cast<int64_t>(r.tokens.size());
  std::fprintf(stderr,
               "\nprompt tokens %lld, generated tokens %lld (finish: %s), seed %llu\n"
               "time to first token %.1f ms, decode %.1f tokens/s (%s, KV cache %s)\n",
               static_cast<long long>(r.prompt_tokens), static_cast<long long>(n),
               r.finish_reason.c_str(), static_cast<unsigned long long>(s.seed),
               r.time_to_first_token_s * 1e3, n > 1 ? (n - 1) / r.decode_s : 0.0,
               backend.name().c_str(), KvTypeName(engine->model().kv_type()));
  return absl::OkStatus();
}


// --server: the same request over gRPC. The seed is picked here when not given, so that it can
// be printed like the in-process run prints it.
absl::Status RunRemote(const GenerateOptions& o) {
  if (o.has_prompt == o.has_chat) {
    return absl::InvalidArgumentError("give exactly one of -p PROMPT or --chat MESSAGE");
  }
  if (o.max_tokens < 0 || o.max_tokens > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("--max-tokens ", o.max_tokens,
                                                   " is out of range"));
  }
  if (o.logprobs < 0 || o.logprobs > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("--logprobs ", o.logprobs, " is out of range"));
  }
  if (!(o.timeout_s > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--timeout ", o.timeout_s, " must be > 0"));
  }
  v1::GenerateRequest req;
  if (o.has_chat) {
    if (!o.system.empty()) {
      v1::ChatMessage* m = req.mutable_chat()->add_messages();
      m->set_role("system");
      m->set_content(o.system);
    }
    v1::ChatMessage* m = req.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(o.chat);
  } else {
    req.set_prompt(o.prompt);
  }
  const uint64_t seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device()();
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_temperature(static_cast<float>(o.temperature));
  s->set_top_k(static_cast<int32_t>(o.top_k));
  s->set_top_p(static_cast<float>(o.top_p));
  s->set_min_p(static_cast<float>(o.min_p));
  s->set_repetition_penalty(static_cast<float>(o.repeat_penalty));
  s->set_frequency_penalty(static_cast<float>(o.frequency_penalty));
  s->set_presence_penalty(static_cast<float>(o.presence_penalty));
  s->set_seed(seed);
  req.set_max_tokens(static_cast<uint32_t>(o.max_tokens));
  for (const std::string& stop : o.stop) req.add_stop(stop);
  req.set_logprobs(static_cast<uint32_t>(o.logprobs));

  std::shared_ptr<grpc::Channel> channel = DialTessera(o.server);
  std::unique_ptr<v1::Tessera::Stub> stub = v1::Tessera::NewStub(channel);
  StreamTiming t;
  const grpc::Status st = StreamGenerate(
      *stub, req, absl::Seconds(o.timeout_s),
      [](const v1::GenerateResponse& m) {
        std::fwrite(m.text().data(), 1, m.text().size(), stdout);
        std::fflush(stdout);
      },
      &t);
  if (!st.ok()) {
    if (t.tokens > 0) std::printf("\n");
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat(o.server, ": ", StatusCodeName(st.error_code()), ": ",
                                     st.error_message()));
  }
  std::printf("\n");
  const v1::Usage& u = t.last.usage();
  const int64_t n = u.generated_tokens();
  const double decode_s = t.total_s - t.ttft_s;
  std::fprintf(stderr,
               "\nprompt tokens %u, generated tokens %lld (finish: %s), seed %llu\n"
               "time to first token %.1f ms (server: %.1f ms), decode %.1f tokens/s "
               "(server %s)\n",
               u.prompt_tokens(), static_cast<long long>(n),
               FinishReasonName(t.last.finish_reason()).c_str(),
               static_cast<unsigned long long>(seed), t.ttft_s * 1e3,
               u.time_to_first_token_s() * 1e3, n > 1 && decode_s > 0 ? (n - 1) / decode_s : 0.0,
               o.server.c_str());
  return absl::OkStatus();
}

}  // namespace

int GenerateMain(int argc, char** argv) {
  GenerateOptions o;
  Args args("generate", "Generates text from a prompt or answers a chat message, streaming it.");
  args.Option("model", "m", &o.model, "GGUF model (default: the model of scripts/fetch-model)");
  args.Option("server", nullptr, &o.server,
              "HOST:PORT of a coordinator (tessera serve/coordinator): generate there");
  args.Option("timeout", nullptr, &o.timeout_s, "with --server: deadline in seconds (600)");
  args.Option("prompt", "p", &o.prompt, "raw prompt to continue");
  args.Option("chat", nullptr, &o.chat, "a user message, formatted with the model's chat template");
  args.Option("system", nullptr, &o.system, "system message for --chat");
  args.Option("max-tokens", "n", &o.max_tokens, "tokens to generate at most (default 256)");
  args.Option("temperature", nullptr, &o.temperature, "0 = greedy (default 0.8)");
  args.Option("top-k", nullptr, &o.top_k, "keep the K most likely tokens, 0 = off (default 40)");
  args.Option("top-p", nullptr, &o.top_p, "nucleus sampling mass, 1 = off (default 0.95)");
  args.Option("min-p", nullptr, &o.min_p, "drop tokens below P x the top probability (0.05)");
  args.Option("repeat-penalty", nullptr, &o.repeat_penalty, "repetition penalty, 1 = off");
  args.Option("frequency-penalty", nullptr, &o.frequency_penalty, "OpenAI-style, 0 = off");
  args.Option("presence-penalty", nullptr, &o.presence_penalty, "OpenAI-style, 0 = off");
  args.Option("seed", nullptr, &o.seed, "random seed (default: random, printed at the end)");
  args.Option("stop", nullptr, &o.stop, "stop string (repeatable)");
  args.Option("logprobs", nullptr, &o.logprobs, "alternatives per token to compute (0..20)");
  args.Option("threads", "t", &o.threads, "CPU threads (default 2)");
  args.Option("kv-memory-mib", nullptr, &o.kv_memory_mib, "KV cache memory (default 256)");
  args.Flag("exact", nullptr, &o.exact,
            "reference arithmetic: float64 sums over reference-dequantized weights, f32 KV cache "
            "(slow; for checking other backends against)");
  args.Option("kv-type", nullptr, &o.kv_type,
              "KV cache: auto (the backend's choice: f16 on CPUs with AVX-512), f16 or f32");
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;
  o.has_prompt = args.seen("prompt");
  o.has_chat = args.seen("chat");
  if (args.seen("server") && args.seen("model")) {
    std::fprintf(stderr, "tessera generate: --model and --server exclude each other (the server "
                         "serves its own model)\n");
    return 2;
  }
  if (args.seen("server") && o.exact) {
    std::fprintf(stderr, "tessera generate: --exact applies to the in-process engine, not to "
                         "--server (the server's workers choose their arithmetic)\n");
    return 2;
  }
  const absl::Status st = args.seen("server") ? RunRemote(o) : Run(o);
  if (!st.ok()) {
    std::fprintf(stderr, "tessera generate: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace tessera::cli
