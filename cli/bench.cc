// tessera bench: prefill and decode tokens/s of the engine, beside the decode roofline
// (measured memory read bandwidth / bytes read per decode step).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/read_bandwidth.h"
#include "kernels/status_macros.h"
#include "model/engine.h"
#include "model/presets.h"
#include "model/weights.h"

namespace tessera::cli {
namespace {

struct BenchOptions {
  std::string model, synthetic, quant = "Q4_0";
  int64_t layers = 0, prompt = 128, tokens = 32, threads = 2, batch = 1;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

absl::Status RunBench(const BenchOptions& o) {
  if (o.prompt < 1 || o.tokens < 1 || o.threads < 1 || o.batch < 1) {
    return absl::InvalidArgumentError("-p, -n, -t and --batch must be at least 1");
  }
  OpenedModel opened;
  std::unique_ptr<SyntheticWeights> synthetic;
  const WeightSource* weights = nullptr;
  if (!o.synthetic.empty()) {
    TESSERA_ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(o.synthetic));
    TESSERA_ASSIGN_OR_RETURN(GgmlType type, ParseGgmlType(o.quant));
    if (o.layers > 0) config.n_layers = std::min(config.n_layers, o.layers);
    std::fprintf(stderr, "building synthetic %s (%lld layers) in %s...\n", o.synthetic.c_str(),
                 static_cast<long long>(config.n_layers), o.quant.c_str());
    TESSERA_ASSIGN_OR_RETURN(synthetic, SyntheticWeights::Create(config, type, 1234));
    weights = synthetic.get();
  } else {
    if (o.model.empty()) return absl::InvalidArgumentError("give -m MODEL or --synthetic SHAPE");
    TESSERA_ASSIGN_OR_RETURN(opened, OpenGgufModel(o.model));
    weights = opened.weights.get();
  }
  const ModelConfig& c = weights->config();
  if (o.prompt + o.tokens > c.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("-p + -n = ", o.prompt + o.tokens,
                                                   " exceeds the context length ", c.n_ctx));
  }

  double bandwidth = 0;
  {
    // Its own pool, gone before the engine's threads start.
    ThreadPool bw_pool(static_cast<int>(o.threads));
    bandwidth = MeasureReadBandwidth(&bw_pool);
  }
  CpuBackend backend(static_cast<int>(o.threads));

  EngineOptions eo;
  KvLayout kv;
  kv.n_layers = static_cast<int>(c.n_layers);
  kv.n_kv_heads = static_cast<int>(c.n_kv_heads);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_tokens = eo.kv_block_tokens;
  kv.n_blocks = o.batch * ((o.prompt + o.tokens + kv.block_tokens - 1) / kv.block_tokens);
  eo.kv_budget_bytes = kv.bytes();
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                           Engine::Create(*weights, ModelShard::Whole(c), &backend, nullptr, eo));

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.n_vocab - 1));
  std::vector<float> logits;

  // Prefill: each sequence's prompt as one step.
  auto start = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < o.batch; ++b) {
    StepInput in{static_cast<SeqId>(b), std::vector<int32_t>(o.prompt), true};
    for (int32_t& t : in.tokens) t = token(rng);
    TESSERA_RETURN_IF_ERROR(engine->Step({in}, &logits));
  }
  const double prefill_s = Seconds(start);

  // Decode: every step advances all sequences by one token.
  std::vector<StepInput> step(static_cast<size_t>(o.batch));
  for (int64_t b = 0; b < o.batch; ++b) step[b] = {static_cast<SeqId>(b), {token(rng)}, true};
  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.tokens; ++i) {
    TESSERA_RETURN_IF_ERROR(engine->Step(step, &logits));
    for (int64_t b = 0; b < o.batch; ++b) {
      step[b].tokens[0] = static_cast<int32_t>(
          std::max_element(logits.begin() + b * c.n_vocab, logits.begin() + (b + 1) * c.n_vocab) -
          (logits.begin() + b * c.n_vocab));
    }
  }
  const double decode_s = Seconds(start);

  // Bytes read per decode step: every weight once, plus each sequence's K and V so far
  // (float32, at the average context of the run).
  const double weight_bytes = static_cast<double>(engine->model().weight_bytes());
  const double avg_ctx = o.prompt + o.tokens / 2.0;
  const double kv_bytes =
      o.batch * avg_ctx * 2.0 * c.n_layers * c.kv_dim() * static_cast<double>(sizeof(float));
  const double roofline_tps = o.batch * bandwidth / (weight_bytes + kv_bytes);
  const double decode_tps = o.batch * o.tokens / decode_s;
  const double prefill_tps = o.batch * o.prompt / prefill_s;

  std::printf("model            %s\n", weights->description().c_str());
  std::printf("backend          %s\n", backend.name().c_str());
  std::printf("shape            %lld layers, n_embd %lld, weights streamed per step %.1f MiB\n",
              static_cast<long long>(c.n_layers), static_cast<long long>(c.n_embd),
              weight_bytes / (1 << 20));
  std::printf("read bandwidth   %.2f GB/s (measured, %lld threads)\n", bandwidth / 1e9,
              static_cast<long long>(o.threads));
  std::printf("prefill          %.1f tokens/s  (%lld x %lld tokens)\n", prefill_tps,
              static_cast<long long>(o.batch), static_cast<long long>(o.prompt));
  std::printf("decode           %.1f tokens/s  (batch %lld, %lld steps)\n", decode_tps,
              static_cast<long long>(o.batch), static_cast<long long>(o.tokens));
  std::printf("decode roofline  %.1f tokens/s  -> %.0f%% of roofline\n", roofline_tps,
              100.0 * decode_tps / roofline_tps);
  return absl::OkStatus();
}

}  // namespace

int BenchMain(int argc, char** argv) {
  BenchOptions o;
  Args args("bench", "Times prefill and decode and prints them beside the decode roofline.");
  args.Option("model", "m", &o.model, "GGUF model file");
  args.Option("synthetic", nullptr, &o.synthetic,
              "random weights of a real shape instead of a file: smollm2-135m, llama3-1b, "
              "llama2-7b, llama2-13b, llama3-8b, llama3-70b, llama3-405b");
  args.Option("quant", nullptr, &o.quant, "weight type of --synthetic (default Q4_0)");
  args.Option("layers", nullptr, &o.layers, "build only the first N layers of --synthetic");
  args.Option("prompt", "p", &o.prompt, "prompt tokens per sequence (default 128)");
  args.Option("tokens", "n", &o.tokens, "decode steps (default 32)");
  args.Option("threads", "t", &o.threads, "CPU threads (default 2)");
  args.Option("batch", nullptr, &o.batch, "concurrent sequences (default 1)");
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;
  const absl::Status s = RunBench(o);
  if (!s.ok()) {
    std::fprintf(stderr, "tessera bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace tessera::cli
