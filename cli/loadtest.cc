// tessera loadtest: load on a coordinator, in the manner of vLLM's benchmark_serving: N requests
// of about P prompt tokens and M generated tokens each, C in flight at once (each client sends
// its next request when the previous one ends); then throughput (requests/s, generated and
// prompt tokens/s), time to first token and inter-token latency percentiles (measured on the
// client, as a user sees them), and the errors by status code.
//
// Prompts: random sequences of common English words (a different one per request, so nothing
// can be served from a cache), sized with one Tokenize call so they hold about P tokens; the
// prompt tokens actually sent are counted from each response's usage.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/grpc_client.h"
#include "grpcpp/client_context.h"

namespace tessera::cli {
namespace {

constexpr const char* kWords[] = {
    "time",   "people", "way",   "water",  "day",    "world",   "story", "house",  "river",
    "light",  "music",  "city",  "garden", "friend", "school",  "road",  "sea",    "mountain",
    "book",   "window", "tree",  "winter", "summer", "morning", "night", "king",   "market",
    "bird",   "horse",  "stone", "fire",   "small",  "old",     "new",   "long",   "great",
    "little", "good",   "high",  "early",  "young",  "strange", "quiet", "bright", "and",
    "the",    "walked", "found", "made",   "saw",    "told",    "gave",  "kept",   "began"};

struct LoadOptions {
  std::string server;
  int64_t concurrency = 1, requests = 16, prompt_tokens = 64, max_tokens = 128;
  double temperature = 1.0, timeout_s = 600;
  int64_t seed = 0;
  bool json = false;
};

struct Result {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;
  StreamTiming timing;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Linear interpolation between the closest ranks (numpy's default method).
  const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

std::string RandomWords(std::mt19937_64& rng, int64_t n) {
  std::string s;
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) s += ' ';
    s += kWords[pick(rng)];
  }
  return s;
}

// Tokens per word of such text, from the server's own tokenizer.
absl::StatusOr<double> TokensPerWord(v1::Tessera::Stub& stub) {
  std::mt19937_64 rng(7);
  constexpr int kWordsProbe = 200;
  v1::TokenizeRequest req;
  req.set_text(RandomWords(rng, kWordsProbe));
  v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  const grpc::Status st = stub.Tokenize(&ctx, req, &resp);
  if (!st.ok()) {
    return absl::UnavailableError(
        absl::StrCat("Tokenize: ", StatusCodeName(st.error_code()), ": ", st.error_message()));
  }
  return static_cast<double>(resp.ids_size()) / kWordsProbe;
}

absl::Status Check(const LoadOptions& o) {
  if (o.server.empty()) return absl::InvalidArgumentError("--server HOST:PORT is required");
  if (o.concurrency < 1 || o.concurrency > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency ", o.concurrency, " must be in 1..4096"));
  }
  if (o.requests < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--requests ", o.requests, " must be >= 1"));
  }
  if (o.prompt_tokens < 1 || o.max_tokens < 1 || o.max_tokens > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt-tokens ", o.prompt_tokens, " and --max-tokens ", o.max_tokens, " must be >= 1"));
  }
  if (!(o.timeout_s > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--timeout ", o.timeout_s, " must be > 0"));
  }
  return absl::OkStatus();
}

absl::Status Run(const LoadOptions& o) {
  if (absl::Status s = Check(o); !s.ok()) return s;
  std::shared_ptr<grpc::Channel> channel = DialTessera(o.server);
  if (!WaitConnected(*channel, absl::Seconds(30))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", o.server, " within 30 s"));
  }
  std::unique_ptr<v1::Tessera::Stub> stub = v1::Tessera::NewStub(channel);
  absl::StatusOr<double> per_word = TokensPerWord(*stub);
  if (!per_word.ok()) return per_word.status();
  const int64_t n_words = std::max<int64_t>(
      1, std::llround(static_cast<double>(o.prompt_tokens) / std::max(*per_word, 0.1)));

  // Every request is built up front, so building prompts does not count as load.
  std::vector<v1::GenerateRequest> requests(o.requests);
  std::mt19937_64 rng(static_cast<uint64_t>(o.seed));
  for (int64_t i = 0; i < o.requests; ++i) {
    v1::GenerateRequest& r = requests[i];
    r.set_prompt(RandomWords(rng, n_words));
    r.set_max_tokens(static_cast<uint32_t>(o.max_tokens));
    r.mutable_sampling()->set_temperature(static_cast<float>(o.temperature));
    r.mutable_sampling()->set_seed(static_cast<uint64_t>(o.seed) + i);
    r.set_request_id(absl::StrCat("loadtest-", i));
  }

  std::vector<Result> results(o.requests);
  std::atomic<int64_t> next{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> clients;
  for (int64_t c = 0; c < o.concurrency; ++c) {
    clients.emplace_back([&] {
      for (int64_t i = next++; i < o.requests; i = next++) {
        Result& r = results[i];
        const grpc::Status st =
            StreamGenerate(*stub, requests[i], absl::Seconds(o.timeout_s), nullptr, &r.timing);
        r.code = st.error_code();
        r.error = st.error_message();
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const double duration_s = absl::ToDoubleSeconds(absl::Now() - start);

  std::vector<double> ttft, itl, e2e;
  int64_t ok = 0, generated = 0, prompt = 0;
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> example_error;
  for (const Result& r : results) {
    if (r.code != grpc::StatusCode::OK) {
      const std::string name = StatusCodeName(r.code);
      ++errors[name];
      example_error.emplace(name, r.error);
      continue;
    }
    ++ok;
    generated += r.timing.last.usage().generated_tokens();
    prompt += r.timing.last.usage().prompt_tokens();
    if (r.timing.tokens > 0) ttft.push_back(r.timing.ttft_s);
    itl.insert(itl.end(), r.timing.gaps_s.begin(), r.timing.gaps_s.end());
    e2e.push_back(r.timing.total_s);
  }

  if (o.json) {
    std::string err_json;
    for (const auto& [name, n] : errors) {
      absl::StrAppend(&err_json, err_json.empty() ? "" : ", ", "\"", name, "\": ", n);
    }
    std::printf(
        "{\"server\": \"%s\", \"concurrency\": %lld, \"requests\": %lld, \"ok\": %lld, "
        "\"errors\": {%s}, \"duration_s\": %.4f, \"request_throughput\": %.4f, "
        "\"output_token_throughput\": %.3f, \"input_token_throughput\": %.3f, "
        "\"mean_prompt_tokens\": %.2f, \"mean_generated_tokens\": %.2f, "
        "\"ttft_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
        "\"itl_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
        "\"e2e_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}}\n",
        o.server.c_str(), static_cast<long long>(o.concurrency), static_cast<long long>(o.requests),
        static_cast<long long>(ok), err_json.c_str(), duration_s, ok / duration_s,
        generated / duration_s, prompt / duration_s, ok ? static_cast<double>(prompt) / ok : 0.0,
        ok ? static_cast<double>(generated) / ok : 0.0, Mean(ttft) * 1e3,
        Percentile(ttft, 50) * 1e3, Percentile(ttft, 90) * 1e3, Percentile(ttft, 99) * 1e3,
        Mean(itl) * 1e3, Percentile(itl, 50) * 1e3, Percentile(itl, 90) * 1e3,
        Percentile(itl, 99) * 1e3, Mean(e2e) * 1e3, Percentile(e2e, 50) * 1e3,
        Percentile(e2e, 90) * 1e3, Percentile(e2e, 99) * 1e3);
  } else {
    std::printf(
        "server %s, concurrency %lld, %lld requests (about %lld prompt tokens, at most "
        "%lld generated tokens each)\n",
        o.server.c_str(), static_cast<long long>(o.concurrency), static_cast<long long>(o.requests),
        static_cast<long long>(o.prompt_tokens), static_cast<long long>(o.max_tokens));
    std::printf("%-34s %lld\n", "successful requests:", static_cast<long long>(ok));
    for (const auto& [name, n] : errors) {
      std::printf("%-34s %lld (e.g. \"%s\")\n", absl::StrCat("failed ", name, ":").c_str(),
                  static_cast<long long>(n), example_error[name].c_str());
    }
    std::printf("%-34s %.2f\n", "duration (s):", duration_s);
    std::printf("%-34s %.3f\n", "request throughput (req/s):", ok / duration_s);
    std::printf("%-34s %.2f\n", "output token throughput (tok/s):", generated / duration_s);
    std::printf("%-34s %.2f\n", "input token throughput (tok/s):", prompt / duration_s);
    std::printf("%-34s %.1f / %.1f\n",
                "mean prompt / generated tokens:", ok ? static_cast<double>(prompt) / ok : 0.0,
                ok ? static_cast<double>(generated) / ok : 0.0);
    auto row = [](const char* name, const std::vector<double>& v) {
      std::printf("%-34s mean %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f\n", name, Mean(v) * 1e3,
                  Percentile(v, 50) * 1e3, Percentile(v, 90) * 1e3, Percentile(v, 99) * 1e3);
    };
    row("time to first token (ms):", ttft);
    row("inter-token latency (ms):", itl);
    row("end-to-end latency (ms):", e2e);
  }
  if (ok == 0) return absl::UnavailableError("every request failed");
  return absl::OkStatus();
}

}  // namespace

int LoadtestMain(int argc, char** argv) {
  LoadOptions o;
  Args args("loadtest",
            "Sends N generate requests, C at a time, to a coordinator and reports throughput, "
            "time to first token and inter-token latency (p50/p90/p99).");
  args.Option("server", nullptr, &o.server, "HOST:PORT of the coordinator (required)");
  args.Option("concurrency", "c", &o.concurrency, "requests in flight at once (default 1)");
  args.Option("requests", "n", &o.requests, "requests in total (default 16)");
  args.Option("prompt-tokens", nullptr, &o.prompt_tokens, "prompt length, about (default 64)");
  args.Option("max-tokens", nullptr, &o.max_tokens, "tokens to generate at most (default 128)");
  args.Option("temperature", nullptr, &o.temperature, "sampling temperature (default 1)");
  args.Option("seed", nullptr, &o.seed, "seed of the prompts and of request i's sampler (+i)");
  args.Option("timeout", nullptr, &o.timeout_s, "deadline of each request in seconds (600)");
  args.Flag("json", nullptr, &o.json, "print one JSON object instead of the table");
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;
  const absl::Status st = Run(o);
  if (!st.ok()) {
    std::fprintf(stderr, "tessera loadtest: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace tessera::cli
