// tessera bench: prefill and decode tokens/s of the engine, beside the decode roofline
// (measured memory bandwidth / bytes read per decode step).
//
// --backend cpu (default): one batch size (--batch), bandwidth = a streaming read over 256 MiB
// (in 2 MiB pages where the kernel offers them, like the backend's copies of the weights) on the
// backend's threads, measured before the decode steps and again after every quarter second of
// them: on a shared machine the bandwidth moves by tens of percent within seconds, so each
// stretch of decode is held against the bandwidth measured on either side of it.
// --backend cuda[:N]: every batch of --batches (default 1,8,32,64) with prefill of -p tokens
// (default 512) per sequence, bandwidth = a large device-to-device copy measured in the same run
// (bytes read + written per second).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/huge_pages.h"
#include "kernels/cpu/read_bandwidth.h"
#include "kernels/status_macros.h"
#include "model/engine.h"
#include "model/presets.h"
#include "model/sampler.h"
#include "model/weights.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tessera::cli {
namespace {

struct BenchOptions {
  std::string model, synthetic, quant = "Q4_0", backend = "cpu", batches, kv_type = "auto";
  int64_t layers = 0, prompt = -1, tokens = 32, threads = 2, batch = 1;
};

struct BenchFigures {
  double prefill_tps = 0, decode_tps = 0, roofline_tps = 0, weight_bytes = 0;
  // The bandwidth the roofline used: bytes over the decode's ideal time (the probes' mean,
  // weighted as the decode's bytes were), and the lowest and highest probe.
  double bandwidth = 0, bandwidth_min = 0, bandwidth_max = 0;
  int probes = 0;
  KvType kv_type = KvType::kF32;
};

// Seconds of decode steps between two bandwidth probes.
constexpr double kProbeInterval = 0.25;

// Prefill of `batch` prompts (each its own step) then `tokens` greedy decode steps of all of
// them, on `backend`. `bandwidth_now` measures the bandwidth (bytes per second): it is called
// before the decode steps and after every kProbeInterval seconds of them, and the roofline is
// the decode's bytes over its ideal time, each stretch's bytes at the mean of the two
// measurements around it. `while_loaded`, if given, runs after the decode steps while the
// engine (its weights and KV cache) still exists.
absl::StatusOr<BenchFigures> Measure(const WeightSource& weights, Backend* backend,
                                     int64_t batch, int64_t prompt, int64_t tokens,
                                     std::optional<KvType> kv_type,
                                     const std::function<double()>& bandwidth_now,
                                     const std::function<void()>& while_loaded = nullptr);

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

absl::Status RunCudaBench(const BenchOptions& o, const WeightSource& weights);

absl::Status RunBench(const BenchOptions& o) {
  if (o.prompt == 0 || o.prompt < -1 || o.tokens < 1 || o.threads < 1 || o.batch < 1) {
    return absl::InvalidArgumentError("-p, -n, -t and --batch must be at least 1");
  }
  TESSERA_RETURN_IF_ERROR(ParseKvType(o.kv_type).status());
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
  if (o.backend != "cpu") return RunCudaBench(o, *weights);
  const std::optional<KvType> kv_type = *ParseKvType(o.kv_type);
  CpuBackend backend(static_cast<int>(o.threads));
  // On the backend's own threads: a second pool would compete with its spinning workers.
  ReadBandwidthProbe probe(backend.pool(), int64_t{256} << 20);
  const int64_t prompt = o.prompt > 0 ? o.prompt : 128;
  // Next to each bandwidth probe, how long a cache line takes between two of the engine's
  // threads and back: where the machine put them (on a VM the two move between dies, and
  // with them both the bandwidth and the cost of every fork-join; bench/RESULTS.md).
  std::vector<double> round_trips;
  TESSERA_ASSIGN_OR_RETURN(BenchFigures f,
                           Measure(*weights, &backend, o.batch, prompt, o.tokens, kv_type, [&] {
                             if (o.threads > 1) {
                               round_trips.push_back(MeasureThreadRoundTrip(backend.pool()));
                             }
                             return probe.Measure(3);
                           }));
  std::printf("model            %s\n", weights->description().c_str());
  std::printf("backend          %s\n", backend.name().c_str());
  std::printf("shape            %lld layers, n_embd %lld, weights streamed per step %.1f MiB\n",
              static_cast<long long>(c.n_layers), static_cast<long long>(c.n_embd),
              f.weight_bytes / (1 << 20));
  std::printf("read bandwidth   %.2f GB/s (measured %d times during decode: %.2f-%.2f; %lld "
              "threads%s)\n",
              f.bandwidth / 1e9, f.probes, f.bandwidth_min / 1e9, f.bandwidth_max / 1e9,
              static_cast<long long>(o.threads),
              TransparentHugePagesAvailable() ? ", 2 MiB pages" : "");
  if (!round_trips.empty()) {
    std::sort(round_trips.begin(), round_trips.end());
    std::printf("core round trip  %.0f ns (median of %zu, measured with the bandwidth: %.0f-%.0f; "
                "threads 0 and 1)\n",
                round_trips[round_trips.size() / 2] * 1e9, round_trips.size(),
                round_trips.front() * 1e9, round_trips.back() * 1e9);
  }
  if (backend.pool()->runs_on_caller() > 0) {
    // ThreadPool: workers found starting late (another process on their CPUs) hand their
    // shares to the caller for a while.
    std::printf("threads          %lld of %lld fork-joins ran on the calling thread alone (its "
                "workers found without CPUs of their own)\n",
                static_cast<long long>(backend.pool()->runs_on_caller()),
                static_cast<long long>(backend.pool()->runs()));
  }
  std::printf("kv cache         %s\n", KvTypeName(f.kv_type));
  std::printf("prefill          %.1f tokens/s  (%lld x %lld tokens)\n", f.prefill_tps,
              static_cast<long long>(o.batch), static_cast<long long>(prompt));
  std::printf("decode           %.1f tokens/s  (batch %lld, %lld steps)\n", f.decode_tps,
              static_cast<long long>(o.batch), static_cast<long long>(o.tokens));
  std::printf("decode roofline  %.1f tokens/s  -> %.0f%% of roofline\n", f.roofline_tps,
              100.0 * f.decode_tps / f.roofline_tps);
  return absl::OkStatus();
}

absl::StatusOr<BenchFigures> Measure(const WeightSource& weights, Backend* backend,
                                     int64_t batch, int64_t prompt, int64_t tokens,
                                     std::optional<KvType> kv_type,
                                     const std::function<double()>& bandwidth_now,
                                     const std::function<void()>& while_loaded) {
  const ModelConfig& c = weights.config();
  if (prompt + tokens > c.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("-p + -n = ", prompt + tokens,
                                                   " exceeds the context length ", c.n_ctx));
  }
  EngineOptions eo;
  KvLayout kv;
  kv.n_layers = static_cast<int>(c.n_layers);
  kv.n_kv_heads = static_cast<int>(c.n_kv_heads);
  kv.head_dim = static_cast<int>(c.head_dim);
  kv.block_tokens = eo.kv_block_tokens;
  kv.n_blocks = batch * ((prompt + tokens + kv.block_tokens - 1) / kv.block_tokens);
  eo.kv_blocks = kv.n_blocks;
  eo.kv_type = kv_type;
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                           Engine::Create(weights, ModelShard::Whole(c), backend, nullptr, eo));

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.n_vocab - 1));
  std::vector<float> logits;

  // Prefill: each sequence's prompt as one step.
  auto start = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < batch; ++b) {
    StepInput in{static_cast<SeqId>(b), std::vector<int32_t>(prompt), true};
    for (int32_t& t : in.tokens) t = token(rng);
    TESSERA_RETURN_IF_ERROR(engine->Step({in}, &logits));
  }
  const double prefill_s = Seconds(start);

  BenchFigures f;
  f.weight_bytes = static_cast<double>(engine->model().weight_bytes());
  f.kv_type = engine->model().kv_type();
  // K and V bytes of one position of one sequence, all layers, in the cache's type.
  const double kv_bytes_per_pos =
      2.0 * c.n_layers * c.kv_dim() * static_cast<double>(KvTypeBytes(f.kv_type));

  // Decode: every step advances all sequences by one token (Step returns host logits, so each
  // step's time includes the device finishing it). Bytes read per step: every weight once, plus
  // each sequence's K and V up to the new token.
  std::vector<StepInput> step(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) step[b] = {static_cast<SeqId>(b), {token(rng)}, true};
  double decode_s = 0, ideal_s = 0, bytes = 0;
  double bw_before = bandwidth_now();
  f.bandwidth_min = f.bandwidth_max = bw_before;
  f.probes = 1;
  for (int64_t i = 0; i < tokens;) {
    start = std::chrono::steady_clock::now();
    double stretch_bytes = 0;
    do {
      TESSERA_RETURN_IF_ERROR(engine->Step(step, &logits));
      for (int64_t b = 0; b < batch; ++b) {
        // Greedy, as the sampler's (the first largest logit).
        step[b].tokens[0] = static_cast<int32_t>(
            ScanLogits(absl::MakeConstSpan(logits.data() + b * c.n_vocab, c.n_vocab)).argmax);
      }
      stretch_bytes += f.weight_bytes + batch * (prompt + i + 1) * kv_bytes_per_pos;
      ++i;
    } while (i < tokens && Seconds(start) < kProbeInterval);
    decode_s += Seconds(start);
    const double bw_after = bandwidth_now();
    f.bandwidth_min = std::min(f.bandwidth_min, bw_after);
    f.bandwidth_max = std::max(f.bandwidth_max, bw_after);
    ++f.probes;
    ideal_s += stretch_bytes / (0.5 * (bw_before + bw_after));
    bytes += stretch_bytes;
    bw_before = bw_after;
  }
  if (while_loaded) while_loaded();

  f.bandwidth = bytes / ideal_s;
  f.roofline_tps = batch * tokens / ideal_s;
  f.decode_tps = batch * tokens / decode_s;
  f.prefill_tps = batch * prompt / prefill_s;
  return f;
}

absl::Status RunCudaBench(const BenchOptions& o, const WeightSource& weights) {
#if TESSERA_HAVE_CUDA
  int device = 0;
  if (o.backend != "cuda" &&
      !(o.backend.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(o.backend.substr(5), &device))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend '", o.backend, "': expected cpu, cuda or cuda:N"));
  }
  std::vector<int64_t> batches;
  for (absl::string_view part :
       absl::StrSplit(o.batches.empty() ? std::string("1,8,32,64") : o.batches, ',')) {
    int64_t b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batches: '", part, "' is not a positive integer"));
    }
    batches.push_back(b);
  }
  const int64_t prompt = o.prompt > 0 ? o.prompt : 512;
  const ModelConfig& c = weights.config();
  const std::optional<KvType> kv_type = *ParseKvType(o.kv_type);
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(device));
  TESSERA_ASSIGN_OR_RETURN(const double bandwidth, backend->MeasureCopyBandwidth());
  std::printf("model            %s\n", weights.description().c_str());
  std::printf("backend          %s\n", backend->name().c_str());
  std::printf("copy bandwidth   %.1f GB/s (device-to-device cudaMemcpy of 1 GiB, read + write)\n",
              bandwidth / 1e9);
  std::printf("%-6s %14s %14s %10s %14s %9s  (prefill %lld tokens per sequence, %lld decode "
              "steps)\n",
              "batch", "prefill tok/s", "decode tok/s", "ms/step", "roofline", "% roof",
              static_cast<long long>(prompt), static_cast<long long>(o.tokens));
  VramUsage vram;
  for (const int64_t batch : batches) {
    // A fresh engine per batch size (its KV cache sized for it; weights uploaded again).
    TESSERA_ASSIGN_OR_RETURN(
        BenchFigures f, Measure(weights, backend.get(), batch, prompt, o.tokens, kv_type,
                                [&] { return bandwidth; }, [&] {
                                  if (absl::StatusOr<VramUsage> v = backend->Vram(); v.ok()) {
                                    vram = *v;
                                  }
                                }));
    std::printf("%-6lld %14.1f %14.1f %10.3f %14.1f %8.0f%%\n", static_cast<long long>(batch),
                f.prefill_tps, f.decode_tps, 1e3 * batch / f.decode_tps, f.roofline_tps,
                100.0 * f.decode_tps / f.roofline_tps);
    std::fflush(stdout);
  }
  std::printf("vram             %.2f GiB total, %.2f GiB free with the last batch's engine "
              "loaded: weights %.2f GiB, KV %.2f GiB, workspace %.2f GiB\n",
              vram.total_bytes / 1073741824.0, vram.free_bytes / 1073741824.0,
              vram.weights_bytes / 1073741824.0, vram.kv_cache_bytes / 1073741824.0,
              vram.workspace_bytes / 1073741824.0);
  std::printf("shape            %lld layers, n_embd %lld\n", static_cast<long long>(c.n_layers),
              static_cast<long long>(c.n_embd));
  return absl::OkStatus();
#else
  (void)weights;
  return absl::FailedPreconditionError(absl::StrCat(
      "--backend ", o.backend, ": this build has no CUDA (nvcc was not found at configure time)"));
#endif
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
  args.Option("prompt", "p", &o.prompt,
              "prompt tokens per sequence (default 128 on cpu, 512 on cuda)");
  args.Option("tokens", "n", &o.tokens, "decode steps (default 32)");
  args.Option("threads", "t", &o.threads, "CPU threads (default 2)");
  args.Option("batch", nullptr, &o.batch, "concurrent sequences (default 1; cpu backend)");
  args.Option("backend", nullptr, &o.backend, "cpu (default), cuda or cuda:N");
  args.Option("kv-type", nullptr, &o.kv_type,
              "KV cache: auto (the backend's choice: f16 on CPUs with AVX-512), f16 or f32");
  args.Option("batches", nullptr, &o.batches,
              "comma-separated batch sizes for the cuda backend (default 1,8,32,64)");
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
