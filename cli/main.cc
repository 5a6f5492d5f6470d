// tessera: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>

#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*main)(int argc, char** argv);
  const char* help;
};

constexpr Command kCommands[] = {
    {"generate", tessera::cli::GenerateMain,
     "generate text or answer a chat message with a model, streaming it"},
    {"inspect", tessera::cli::InspectMain,
     "describe a GGUF model: architecture, config, tensors and bytes per quant type"},
    {"bench", tessera::cli::BenchMain,
     "time prefill and decode on a model or a synthetic shape, beside the roofline"},
    {"plan", tessera::cli::PlanMain,
     "what fits where: bytes per quantization, KV cache, and the TP x PP layout per GPU"},
    {"serve", tessera::cli::ServeMain,
     "a local cluster: the coordinator and TP x PP x R worker processes on loopback"},
    {"coordinator", tessera::cli::CoordinatorMain,
     "the coordinator of a cluster: public gRPC API, workers attach to it"},
    {"worker", tessera::cli::WorkerMain,
     "one worker of a cluster: attaches to a coordinator, loads its shard, runs steps"},
    {"loadtest", tessera::cli::LoadtestMain,
     "load on a coordinator: throughput, time to first token, inter-token latency"},
};

int Usage(FILE* out) {
  std::fprintf(out, "usage: tessera <command> [options]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-11s %s\n", c.name, c.help);
  std::fprintf(out, "\n`tessera <command> --help` describes a command's options.\n");
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage(stderr);
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    return Usage(stdout);
  }
  for (const Command& c : kCommands) {
    if (!std::strcmp(argv[1], c.name)) return c.main(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
  return Usage(stderr);
}
