// tessera coordinator: the coordinator of a real cluster. Serves the public API
// (tessera.v1.Tessera) and the worker API (tessera.v1.Coordinator) on one port, with health and
// reflection; workers started elsewhere (`tessera worker --coordinator HOST:PORT`) attach, form
// the TP x PP replica groups, and requests flow once a group is ready. Runs until SIGTERM or
// SIGINT, then shuts the workers down and exits 0.
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/coordinator_process.h"

namespace tessera::cli {

int CoordinatorMain(int argc, char** argv) {
  BlockTerminationSignals(/*with_children=*/false);
  CoordinatorFlags flags;
  Args args("coordinator",
            "Runs the coordinator of a cluster: the public gRPC API and the port workers attach "
            "to; prints its address and serves until SIGTERM/SIGINT.");
  flags.Declare(args);
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;
  absl::StatusOr<std::unique_ptr<CoordinatorProcess>> p = CoordinatorProcess::Start(flags);
  if (!p.ok()) {
    std::fprintf(stderr, "tessera coordinator: %s\n", std::string(p.status().message()).c_str());
    return 1;
  }
  CoordinatorProcess& c = **p;
  std::printf("coordinator: %s; listening on %s", c.Describe().c_str(), c.address().c_str());
  if (c.metrics_port() > 0) std::printf(", metrics on port %d", c.metrics_port());
  std::printf("; waiting for %lld workers\n",
              static_cast<long long>(flags.tp * flags.pp * flags.replicas));
  std::fflush(stdout);
  int ready = 0;
  int sig = 0;
  while ((sig = WaitForSignal(absl::Milliseconds(200))) == 0) {
    const int now = c.ready_replicas();
    if (now != ready) {
      std::printf("%d of %d replicas ready (%s)\n", now, c.replicas(), c.ReplicaStates().c_str());
      std::fflush(stdout);
      ready = now;
    }
  }
  std::fprintf(stderr, "coordinator: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  c.Shutdown(sig == SIGINT ? "coordinator interrupted" : "coordinator terminated");
  return 0;
}

}  // namespace tessera::cli
