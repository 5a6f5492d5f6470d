// tessera worker: one worker process of a cluster. It dials the coordinator,
// registers, loads the shard it is assigned and runs steps until the
// coordinator says Shutdown (exit 0), refuses it (exit 1), stays unreachable
// past the reconnect timeout (exit 1), or SIGTERM/SIGINT arrive (clean stop,
// exit 0). The protocol is in worker/worker.h.
#include "worker/worker.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/coordinator_process.h"
#include "metrics/metrics.h"
#include "sharding/byte_size.h"

namespace tessera::cli {
namespace {

// "256MiB", "1GB", or a plain number of bytes.
absl::StatusOr<int64_t> ParseBytesFlag(const std::string &text) {
  int64_t bytes = 0;
  if (absl::SimpleAtoi(text, &bytes)) return bytes;
  return ParseByteSize(text);
}

}  // namespace

int WorkerMain(int argc, char **argv) {
  BlockTerminationSignals(/*with_children=*/false);
  std::string coordinator, listen = "0.0.0.0:0", advertise_host, name, model, device = "cpu";
  std::string kv_cache = "256MiB";
  int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  int64_t metrics_port = -1;
  double connect_timeout_s = 60, reconnect_timeout_s = 60;
  Args args("worker",
            "Runs one worker of a cluster: attaches to the "
            "coordinator, loads the shard it is "
            "assigned and runs its steps until the coordinator shuts "
            "it down or SIGTERM/SIGINT.");
  args.Option("coordinator", nullptr, &coordinator, "the coordinator's HOST:PORT (required)");
  args.Option("listen", nullptr, &listen,
              "this worker's gRPC server (health, reflection) (default "
              "0.0.0.0:0: any port)");
  args.Option("advertise-host", nullptr, &advertise_host,
              "host its peers reach its TCP listeners at (default: the "
              "coordinator's host if "
              "that is loopback, else this machine's hostname)");
  args.Option("name", nullptr, &name, "worker id, unique in the cluster (default hostname:pid)");
  args.Option("model", "m", &model,
              "GGUF model path on this machine (default: the path the "
              "coordinator assigns)");
  args.Option("device", nullptr, &device, "cpu or cuda:N (default cpu)");
  args.Option("threads", "t", &threads, "CPU threads (default: this machine's cores)");
  args.Option("kv-cache-bytes", nullptr, &kv_cache,
              "KV cache budget when the coordinator sets none, e.g. 512MiB "
              "(default 256MiB)");
  args.Option("metrics-port", nullptr, &metrics_port,
              "serve Prometheus /metrics on this port (default: off; 0 = any "
              "free port)");
  args.Option("connect-timeout", nullptr, &connect_timeout_s,
              "seconds to keep dialing a coordinator that is not up yet (default 60)");
  args.Option("reconnect-timeout", nullptr, &reconnect_timeout_s,
              "seconds to keep re-registering after the coordinator went away "
              "(default 60)");
  int code = 0;
  if (!ParseOrExit(args, argc, argv, &code)) return code;

  auto fail = [](const std::string &message) {
    std::fprintf(stderr, "tessera worker: %s\n", message.c_str());
    return 1;
  };
  if (coordinator.empty()) return fail("--coordinator HOST:PORT is required");
  if (threads < 1 || threads > 1024) {
    return fail(absl::StrCat("--threads ", threads, " is out of range [1, 1024]"));
  }
  if (metrics_port < -1 || metrics_port > 65535) {
    return fail(absl::StrCat("--metrics-port ", metrics_port, " is out of range [0, 65535]"));
  }
  if (!(connect_timeout_s > 0) || !(reconnect_timeout_s > 0)) {
    return fail("--connect-timeout and --reconnect-timeout must be > 0 seconds");
  }
  absl::StatusOr<int64_t> kv_bytes = ParseBytesFlag(kv_cache);
  if (!kv_bytes.ok()) return fail(absl::StrCat("--kv-cache-bytes: ", kv_bytes.status().message()));
  if (*kv_bytes < 1) return fail(absl::StrCat("--kv-cache-bytes must be positive, got ", kv_cache));

  std::unique_ptr<MetricsExporter> exporter;
  std::unique_ptr<WorkerMetrics> metrics;
  if (metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsExporter>> e =
        MetricsExporter::Start(absl::StrCat("0.0.0.0:", metrics_port));
    if (!e.ok()) return fail(std::string(e.status().message()));
    exporter = *std::move(e);
  }

  WorkerOptions o;
  o.coordinator = coordinator;
  o.listen = listen;
  o.advertise_host = advertise_host;
  o.id = name;
  o.model_path = model;
  o.device = device;
  o.threads = static_cast<int>(threads);
  o.kv_cache_bytes = *kv_bytes;
  o.connect_timeout = absl::Seconds(connect_timeout_s);
  o.reconnect_timeout = absl::Seconds(reconnect_timeout_s);
  if (exporter != nullptr) {
    // The labels are completed once the coordinator assigns a shard.
    metrics = std::make_unique<WorkerMetrics>(exporter->registry(),
                                              WorkerLabels{name, "", "", "", device});
    o.metrics = metrics.get();
  }
  absl::StatusOr<std::unique_ptr<Worker>> worker = Worker::Create(o);
  if (!worker.ok()) return fail(std::string(worker.status().message()));
  Worker &w = **worker;
  if (metrics != nullptr) metrics->set_labels(WorkerLabels{w.id(), "", "", "", device});
  std::printf("worker %s: %s, gRPC on %s", w.id().c_str(), w.device_name().c_str(),
              w.address().c_str());
  if (exporter != nullptr) std::printf(", metrics on port %d", exporter->port());
  std::printf("; attaching to %s\n", coordinator.c_str());
  std::fflush(stdout);

  absl::Status result;
  absl::Notification done;
  std::thread runner([&] {
    result = w.Run();
    done.Notify();
  });
  int sig = 0;
  while (!done.HasBeenNotified()) {
    sig = WaitForSignal(absl::Milliseconds(200));
    if (sig != 0) {
      std::fprintf(stderr, "worker %s: %s, stopping\n", w.id().c_str(),
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      w.Stop();
      break;
    }
  }
  runner.join();
  if (!result.ok()) return fail(std::string(result.message()));
  std::fprintf(stderr, "worker %s: stopped\n", w.id().c_str());
  return 0;
}

}  // namespace tessera::cli
