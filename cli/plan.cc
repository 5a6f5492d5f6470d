// tessera plan: what fits where. For a model file or a named shape, prints (1) the weight bytes
// each common quantization recipe gives it (exact, from its tensors' types), the KV cache bytes
// for context x batch, and the smallest TP x PP layout that fits on GPUs of the given memory;
// (2) the plan for the chosen quantization: every rank's shard ranges and bytes, and headroom.
// A layout that cannot work is refused with the reason (exit code 1).
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "kernels/status_macros.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/presets.h"
#include "sharding/byte_size.h"
#include "sharding/planner.h"
#include "sharding/recipes.h"

namespace tessera::cli {
namespace {

struct PlanCliOptions {
  std::string model, arch, quant, gpu_memory, reserve = "1GiB";
  int64_t gpus = 1, context = 0, batch = 1, tp = 0, pp = 0, kv_bytes = 2, gpus_per_node = 8;
};

std::string Range(int64_t begin, int64_t end) { return absl::StrCat("[", begin, ",", end, ")"); }

std::string Layout(const Plan& p) {
  return absl::StrCat("TP", p.tp, " x PP", p.pp, " (", p.gpus(),
                      p.gpus() == 1 ? " GPU)" : " GPUs)");
}

// The smallest layout on any number of GPUs of this memory, for the summary table.
std::string SmallestLayout(const ModelConfig& c, const WeightTypes& w, const ClusterSpec& cluster,
                           const PlanOptions& o) {
  ClusterSpec unlimited = cluster;
  unlimited.n_gpus = cluster.gpus_per_node * c.n_layers;
  PlanOptions auto_layout = o;
  auto_layout.tp = auto_layout.pp = 0;
  absl::StatusOr<Plan> p = MakePlan(c, w, unlimited, auto_layout);
  if (!p.ok()) return "none";
  return Layout(*p);
}

absl::Status PrintRecipeRow(const std::string& name, const ModelConfig& c, const WeightTypes& w,
                            const ClusterSpec& cluster, const PlanOptions& o) {
  TESSERA_ASSIGN_OR_RETURN(WeightTotals t, TotalWeightBytes(c, w));
  absl::PrintF("%-8s %14d %9.2f %8.3f  %s\n", name, t.bytes, t.bytes / 1073741824.0,
               t.bits_per_weight(), SmallestLayout(c, w, cluster, o));
  return absl::OkStatus();
}

// Returns the exit code: 0, 1 (refused), 2 (bad arguments).
int Run(const PlanCliOptions& o) {
  auto fail = [](const absl::Status& s, int code) {
    std::fprintf(stderr, "tessera plan: %s\n", std::string(s.message()).c_str());
    return code;
  };
  if (o.model.empty() == o.arch.empty()) {
    return fail(absl::InvalidArgumentError("give exactly one of --model FILE and --arch NAME"), 2);
  }
  if (o.gpu_memory.empty()) {
    return fail(absl::InvalidArgumentError("--gpu-memory is required (e.g. 80GiB, 24GB)"), 2);
  }
  absl::StatusOr<int64_t> memory = ParseByteSize(o.gpu_memory);
  if (!memory.ok()) return fail(memory.status(), 2);
  if (*memory <= 0) return fail(absl::InvalidArgumentError("--gpu-memory must be more than 0"), 2);
  absl::StatusOr<int64_t> reserve = ParseByteSize(o.reserve);
  if (!reserve.ok()) return fail(reserve.status(), 2);

  // The model: its config and, for a file, its own tensor types.
  std::unique_ptr<GgufFile> file;
  ModelConfig config;
  std::string description;
  if (!o.model.empty()) {
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(o.model);
    if (!f.ok()) return fail(f.status(), 1);
    file = *std::move(f);
    absl::StatusOr<ModelConfig> c = LoadModelConfig(*file);
    if (!c.ok()) return fail(c.status(), 1);
    config = *c;
    description = absl::StrCat(o.model, config.name.empty() ? "" : " (" + config.name + ")");
  } else {
    absl::StatusOr<ModelConfig> c = PresetConfig(o.arch);
    if (!c.ok()) return fail(c.status(), 2);
    config = *c;
    description = absl::StrCat(o.arch, " (preset shape)");
  }
  absl::StatusOr<WeightTypes> file_types;
  if (file != nullptr) {
    file_types = WeightTypesFromFile(*file, config);
    if (!file_types.ok()) return fail(file_types.status(), 1);
  }

  PlanOptions po;
  po.tp = o.tp;
  po.pp = o.pp;
  po.context_tokens = o.context > 0 ? o.context : std::min<int64_t>(8192, config.n_ctx);
  po.batch = o.batch;
  po.kv_elem_bytes = o.kv_bytes;
  po.reserve_bytes = *reserve;
  if (o.context < 0 || o.batch < 1 || o.kv_bytes < 1 || o.tp < 0 || o.pp < 0 || o.gpus < 1) {
    return fail(absl::InvalidArgumentError(
                    "--context, --batch, --kv-bytes and --gpus must be positive, --tp and --pp "
                    "positive or 0 (choose)"),
                2);
  }
  if (po.context_tokens > config.n_ctx) {
    std::fprintf(stderr,
                 "tessera plan: note: --context %lld exceeds the model's trained context %lld\n",
                 static_cast<long long>(po.context_tokens), static_cast<long long>(config.n_ctx));
  }
  ClusterSpec cluster;
  cluster.n_gpus = o.gpus;
  cluster.gpu_memory_bytes = *memory;
  cluster.gpus_per_node = o.gpus_per_node;

  // (1) The model, the KV cache, and the recipe table.
  const ModelConfig& c = config;
  int64_t elements = 0;
  if (absl::StatusOr<WeightTotals> t = TotalWeightBytes(c, RecipeWeightTypes(c, QuantRecipe::kF16));
      t.ok()) {
    elements = t->elements;
  }
  absl::PrintF(
      "model     %s: %d layers, n_embd %d, %d query / %d KV heads x %d, n_ff %d, "
      "vocab %d%s, %d weights\n",
      description, c.n_layers, c.n_embd, c.n_heads, c.n_kv_heads, c.head_dim, c.n_ff, c.n_vocab,
      c.tied_output ? " (tied output)" : "", elements);
  const int64_t kv = KvCacheBytes(c, po);
  absl::PrintF("KV cache  %d tokens x %d sequence%s x %d bytes per element: %d bytes (%s)\n",
               po.context_tokens, po.batch, po.batch == 1 ? "" : "s", po.kv_elem_bytes, kv,
               FormatBytes(kv));
  absl::PrintF(
      "devices   %d GPU%s x %s (%d bytes), reserve %s per GPU, TP within %d GPUs "
      "per node\n\n",
      cluster.n_gpus, cluster.n_gpus == 1 ? "" : "s", FormatBytes(*memory), *memory,
      FormatBytes(*reserve), cluster.gpus_per_node);
  absl::PrintF("%-8s %14s %9s %8s  %s\n", "quant", "weight_bytes", "GiB", "bpw",
               absl::StrCat("smallest layout on ", FormatBytes(*memory), " GPUs"));
  for (QuantRecipe r : AllQuantRecipes()) {
    if (absl::Status s =
            PrintRecipeRow(QuantRecipeName(r), c, RecipeWeightTypes(c, r), cluster, po);
        !s.ok()) {
      absl::PrintF("%-8s %s\n", QuantRecipeName(r), s.message());
    }
  }
  if (file_types.ok() && file != nullptr) {
    if (absl::Status s = PrintRecipeRow("file", c, *file_types, cluster, po); !s.ok()) {
      return fail(s, 1);
    }
  }

  // (2) The plan for the chosen types.
  WeightTypes chosen;
  if (!o.quant.empty() || file == nullptr) {
    absl::StatusOr<QuantRecipe> r = ParseQuantRecipe(o.quant.empty() ? "Q4_K_M" : o.quant);
    if (!r.ok()) return fail(r.status(), 2);
    chosen = RecipeWeightTypes(c, *r);
  } else {
    chosen = *file_types;
  }
  const bool asked = o.tp > 0 && o.pp > 0;
  absl::PrintF("\nplan      %s on %d GPU%s of %s: ", chosen.source, cluster.n_gpus,
               cluster.n_gpus == 1 ? "" : "s", FormatBytes(*memory));
  absl::StatusOr<Plan> plan = MakePlan(c, chosen, cluster, po);
  if (!plan.ok()) {
    absl::PrintF("refused\n");
    std::fflush(stdout);
    return fail(plan.status(), 1);
  }
  const Plan& p = *plan;
  absl::PrintF("%s, %s\n", Layout(p), asked ? "as asked" : "the smallest layout that fits");
  absl::PrintF("%-5s %-3s %-5s %-10s %-9s %-10s %-14s %-16s %14s %14s %14s %11s\n", "rank", "tp",
               "stage", "layers", "kv_heads", "q_heads", "ffn_rows", "vocab_rows", "weight_bytes",
               "kv_bytes", "total_bytes", "headroom");
  for (const RankPlan& r : p.ranks) {
    const ModelShard& s = r.shard;
    const int64_t q0 = s.kv_head_begin * c.n_gqa();
    absl::PrintF(
        "%-5d %-3d %-5d %-10s %-9s %-10s %-14s %-16s %14d %14d %14d %11s\n", r.rank, r.tp_rank,
        r.pp_stage, Range(s.layer_begin, s.layer_end), Range(s.kv_head_begin, s.kv_head_end),
        Range(q0, q0 + r.n_heads), Range(s.ff_begin, s.ff_end),
        s.last_stage(c) ? Range(s.vocab_begin, s.vocab_end) : std::string("-"), r.weight_bytes,
        r.kv_bytes, r.total_bytes(), FormatBytes(*memory - r.total_bytes()));
  }
  absl::StatusOr<WeightTotals> whole = TotalWeightBytes(c, chosen);
  absl::PrintF(
      "sum       weights %d bytes over all ranks (model %d + replicated %d), KV cache %d "
      "bytes; FFN cuts every %d rows, KV-head cuts every %d heads; %d replica%s of "
      "this layout fit the %d GPU%s\n",
      p.sum_weight_bytes(), whole.ok() ? whole->bytes : 0,
      p.sum_weight_bytes() - (whole.ok() ? whole->bytes : 0), p.sum_kv_bytes(), p.ff_cut_elems,
      p.kv_head_cut, cluster.n_gpus / p.gpus(), cluster.n_gpus / p.gpus() == 1 ? "" : "s",
      cluster.n_gpus, cluster.n_gpus == 1 ? "" : "s");
  return 0;
}

}  // namespace

int PlanMain(int argc, char** argv) {
  PlanCliOptions o;
  Args args("plan",
            "What fits where: weight bytes of each quantization recipe for a model, its KV cache, "
            "the smallest TP x PP layout that fits on GPUs of a given memory, and the plan per "
            "rank (shard ranges and bytes). Refusals say why and exit with 1.");
  args.Option("model", "m", &o.model, "GGUF model file (its own tensor types are planned)");
  args.Option("arch", "", &o.arch,
              "named shape instead of a file: smollm2-135m, llama3-1b, llama2-7b, llama2-13b, "
              "llama3-8b, llama3-70b, llama3-405b");
  args.Option("quant", "q", &o.quant,
              "recipe to plan: F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M (default with --arch), Q4_0, "
              "Q3_K_M, Q2_K; with --model the default is the file's own types");
  args.Option("gpus", "", &o.gpus, "GPUs available (default 1)");
  args.Option("gpu-memory", "", &o.gpu_memory, "memory per GPU, e.g. 80GiB, 24GB, 81920MiB");
  args.Option("context", "c", &o.context,
              "KV cache tokens per sequence (default 8192, or the model's context if smaller)");
  args.Option("batch", "b", &o.batch, "concurrent sequences in the KV cache (default 1)");
  args.Option("tp", "", &o.tp, "tensor-parallel ranks (default: choose)");
  args.Option("pp", "", &o.pp, "pipeline stages (default: choose)");
  args.Option("kv-bytes", "", &o.kv_bytes, "bytes per cached K/V element (default 2: F16)");
  args.Option("reserve", "", &o.reserve,
              "per-GPU memory kept for activations and the runtime (default 1GiB)");
  args.Option("gpus-per-node", "", &o.gpus_per_node,
              "GPUs per node: automatic layouts keep TP within one (default 8)");
  int exit_code = 0;
  if (!ParseOrExit(args, argc, argv, &exit_code)) return exit_code;
  return Run(o);
}

}  // namespace tessera::cli
