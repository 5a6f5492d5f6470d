#include "cli/coordinator_process.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cli/commands.h"
#include "coordinator/cluster.h"
#include "coordinator/generate_service.h"
#include "coordinator/scheduler.h"
#include "coordinator/served_model.h"
#include "kernels/status_macros.h"
#include "metrics/metrics.h"
#include "model/config.h"
#include "model/gguf.h"
#include "sharding/weight_types.h"
#include "worker/grpc_server.h"
#include "model/weights.h"
#include "worker/worker.h"
#include "worker/worker_shard.h"  // worker.h holds an AssignedShard by unique_ptr

namespace tessera::cli {
namespace {

sigset_t TerminationSignals(bool with_children) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (with_children) sigaddset(&set, SIGCHLD);
  return set;
}

bool g_with_children = false;

class Process final : public CoordinatorProcess {
 public:
  ~Process() override { Shutdown("coordinator stopped"); }

  int port() const override { return server_.port; }
  std::string address() const override { return absl::StrCat(host_, ":", server_.port); }
  int metrics_port() const override { return exporter_ ? exporter_->port() : 0; }
  int ready_replicas() const override { return cluster_->ready_replicas(); }
  int replicas() const override { return cluster_->replicas(); }
  std::string Describe() const override {
    return absl::StrCat(model_->name, " (", model_->quantization, "), TP=", tp_, " x PP=", pp_,
                        ", ", cluster_->replicas(),
                        cluster_->replicas() == 1 ? " replica" : " replicas");
  }
  std::string ReplicaStates() const override {
    std::vector<std::string> lines;
    for (const v1::ReplicaInfo& r : cluster_->ReplicaInfos()) {
      lines.push_back(absl::StrCat("replica ", r.replica(), ": ", r.state()));
    }
    return absl::StrJoin(lines, "; ");
  }

  void Shutdown(const std::string& reason) override {
    {
      absl::MutexLock l(&mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    // The cluster first: it lets the workers' Attach handlers return, which the server's
    // shutdown waits for; then the schedulers fail what is still queued; then the server
    // (Generate handlers see their streams finished and return).
    if (cluster_) cluster_->Shutdown(reason);
    for (auto& s : schedulers_) s->Stop();
    if (server_.server)
      server_.server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }

  static absl::StatusOr<std::unique_ptr<Process>> Create(const CoordinatorFlags& f);

 private:
  std::string host_;
  int64_t tp_ = 1, pp_ = 1;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<MetricsExporter> exporter_;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<Cluster> cluster_;
  std::vector<std::unique_ptr<Scheduler>> schedulers_;
  std::unique_ptr<GenerateService> service_;
  GrpcServer server_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<Process>> Process::Create(const CoordinatorFlags& f) {
  auto p = std::make_unique<Process>();
  p->host_ = f.host;
  p->tp_ = f.tp;
  p->pp_ = f.pp;
  TESSERA_ASSIGN_OR_RETURN(const std::string path, ResolveModelPath(f.model));
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  TESSERA_ASSIGN_OR_RETURN(p->model_, ServedModel::FromGguf(*file));

  if (f.metrics_port >= 0) {
    TESSERA_ASSIGN_OR_RETURN(p->exporter_,
                             MetricsExporter::Start(absl::StrCat(f.host, ":", f.metrics_port)));
    p->metrics_ = std::make_unique<CoordinatorMetrics>(p->exporter_->registry());
  }

  ClusterOptions co;
  co.model_path = path;
  co.config = p->model_->config;
  TESSERA_ASSIGN_OR_RETURN(co.weight_types, WeightTypesFromFile(*file, co.config));
  co.tp = static_cast<int>(f.tp);
  co.pp = static_cast<int>(f.pp);
  co.replicas = static_cast<int>(f.replicas);
  co.kv_block_tokens = static_cast<int>(f.kv_block_tokens);
  co.kv_cache_bytes = f.kv_cache_bytes;
  co.step_timeout = absl::Seconds(f.step_timeout_s);
  co.version = tessera::kWorkerProtocolVersion;
  co.metrics = p->metrics_.get();
  TESSERA_ASSIGN_OR_RETURN(p->cluster_, Cluster::Create(std::move(co)));

  std::vector<ServiceReplica> replicas;
  for (int r = 0; r < p->cluster_->replicas(); ++r) {
    SchedulerOptions so;
    so.replica = r;
    so.context_length = p->model_->config.n_ctx;
    so.tokenizer = p->model_->tokenizer.get();
    so.max_waiting = f.max_waiting;
    so.max_step_tokens = f.max_batch_tokens;
    so.prefill_chunk = f.max_batch_tokens;
    so.max_running = std::min(f.max_running, f.max_batch_tokens);
    so.metrics = p->metrics_.get();
    TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> s,
                             Scheduler::Create(p->cluster_->executor(r), so));
    Scheduler* sp = s.get();
    replicas.push_back({[sp](ScheduledRequest req) { return sp->Submit(std::move(req)); },
                        [sp] { return sp->load(); }});
    p->schedulers_.push_back(std::move(s));
  }

  GenerateServiceOptions so;
  so.prepare.default_max_tokens = static_cast<uint32_t>(f.default_max_tokens);
  so.kv_block_tokens = static_cast<int>(f.kv_block_tokens);
  so.metrics = p->metrics_.get();
  Cluster* cluster = p->cluster_.get();
  so.fill_cluster_info = [cluster](v1::ModelInfo* info) { cluster->FillModelInfo(info); };
  p->service_ = std::make_unique<GenerateService>(*p->model_, std::move(replicas), std::move(so));

  const std::string address = absl::StrCat(f.host, ":", f.port);
  TESSERA_ASSIGN_OR_RETURN(p->server_,
                           StartGrpcServer(address, {p->service_.get(), p->cluster_.get()}));
  return p;
}

}  // namespace

void CoordinatorFlags::Declare(Args& args) {
  args.Option("model", "m", &model, "GGUF model (default: the model of scripts/fetch-model)");
  args.Option("tp", nullptr, &tp, "tensor-parallel ranks per replica (default 1)");
  args.Option("pp", nullptr, &pp, "pipeline stages per replica (default 1)");
  args.Option("replicas", nullptr, &replicas, "replica groups of TP x PP workers (default 1)");
  args.Option("host", nullptr, &host, "address to listen on (default 0.0.0.0)");
  args.Option("port", nullptr, &port, "gRPC port: public API and worker attach (default 50051)");
  args.Option("metrics-port", nullptr, &metrics_port,
              "serve Prometheus /metrics on this port (default: off; 0 = any free port)");
  args.Option("kv-cache-bytes", nullptr, &kv_cache_bytes,
              "KV cache budget of each worker in bytes (default: the worker's own)");
  args.Option("kv-block-tokens", nullptr, &kv_block_tokens, "tokens per KV block (default 16)");
  args.Option("max-waiting", nullptr, &max_waiting,
              "queued requests per replica before RESOURCE_EXHAUSTED (default 256)");
  args.Option("max-batch-tokens", nullptr, &max_batch_tokens,
              "tokens per scheduler step, prefill chunks plus decodes (default 512)");
  args.Option("max-running", nullptr, &max_running, "sequences per batch (default 64)");
  args.Option("default-max-tokens", nullptr, &default_max_tokens,
              "max_tokens of a request that leaves it 0 (default 256)");
  args.Option("step-timeout", nullptr, &step_timeout_s,
              "seconds a step may take before its group is failed (default 60)");
}

absl::Status CoordinatorFlags::Validate() const {
  auto in = [](const char* flag, int64_t v, int64_t lo, int64_t hi) -> absl::Status {
    if (v >= lo && v <= hi) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", v, " is out of range [", lo, ", ", hi, "]"));
  };
  TESSERA_RETURN_IF_ERROR(in("tp", tp, 1, 64));
  TESSERA_RETURN_IF_ERROR(in("pp", pp, 1, 64));
  TESSERA_RETURN_IF_ERROR(in("replicas", replicas, 1, 64));
  TESSERA_RETURN_IF_ERROR(in("port", port, 0, 65535));
  TESSERA_RETURN_IF_ERROR(in("metrics-port", metrics_port, -1, 65535));
  TESSERA_RETURN_IF_ERROR(in("kv-cache-bytes", kv_cache_bytes, 0, int64_t{1} << 50));
  TESSERA_RETURN_IF_ERROR(in("kv-block-tokens", kv_block_tokens, 1, 1024));
  TESSERA_RETURN_IF_ERROR(in("max-waiting", max_waiting, 0, 1 << 20));
  TESSERA_RETURN_IF_ERROR(in("max-batch-tokens", max_batch_tokens, 1, 1 << 20));
  TESSERA_RETURN_IF_ERROR(in("max-running", max_running, 1, 1 << 16));
  TESSERA_RETURN_IF_ERROR(in("default-max-tokens", default_max_tokens, 1, 1 << 24));
  if (!(step_timeout_s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--step-timeout ", step_timeout_s, " must be > 0 seconds"));
  }
  if (host.empty()) return absl::InvalidArgumentError("--host is empty");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CoordinatorProcess>> CoordinatorProcess::Start(
    const CoordinatorFlags& flags) {
  TESSERA_RETURN_IF_ERROR(flags.Validate());
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Process> p, Process::Create(flags));
  return std::unique_ptr<CoordinatorProcess>(std::move(p));
}

absl::StatusOr<std::string> ResolveModelPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  const std::string path = DefaultModelPath();
  if (::access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("no --model given and the default model ", path,
                                            " is missing: run scripts/fetch-model"));
  }
  return path;
}

void BlockTerminationSignals(bool with_children) {
  g_with_children = with_children;
  const sigset_t set = TerminationSignals(with_children);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForSignal(absl::Duration timeout) {
  const sigset_t set = TerminationSignals(g_with_children);
  const timespec ts = absl::ToTimespec(timeout);
  while (true) {
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) return 0;
  }
}

}  // namespace tessera::cli
