#include "metrics/metrics.h"

#include <exception>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace tessera {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

// Buckets for LLM serving latencies. Time to first token spans a few milliseconds (short
// prompt, idle server) to a minute (long prompt behind a queue); inter-token latency 1 ms
// (small model, GPU) to 2 s (405B over a pipeline); whole requests up to 10 minutes.
const Histogram::BucketBoundaries kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                  2.5,   5,    10,    20,   40,  60};
const Histogram::BucketBoundaries kItlBuckets = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06,
                                                 0.08,  0.1,    0.15,  0.2,  0.3,  0.5,  1, 2};
const Histogram::BucketBoundaries kDurationBuckets = {0.1, 0.25, 0.5, 1,   2.5, 5,  10,
                                                      20,  40,   80,  160, 320, 600};
const Histogram::BucketBoundaries kQueueBuckets = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25,
                                                   0.5,   1,     2.5,  5,    10,  30, 60};
const Histogram::BucketBoundaries kStepBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
const Histogram::BucketBoundaries kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const Histogram::BucketBoundaries kBatchTokenBuckets = {1,   4,   16,   64,   128,
                                                        256, 512, 1024, 2048, 4096};

Labels WorkerLabelSet(const WorkerLabels& w) {
  return {{"worker", w.worker},
          {"replica", w.replica},
          {"rank", w.rank},
          {"stage", w.stage},
          {"device", w.device}};
}

Labels With(Labels labels, const std::string& key, const std::string& value) {
  labels[key] = value;
  return labels;
}

class ExporterImpl final : public MetricsExporter {
 public:
  ExporterImpl(std::unique_ptr<prometheus::Exposer> exposer,
               std::shared_ptr<prometheus::Registry> registry)
      : exposer_(std::move(exposer)), registry_(std::move(registry)) {}
  int port() const override {
    std::vector<int> ports = exposer_->GetListeningPorts();
    return ports.empty() ? 0 : ports[0];
  }
  prometheus::Registry& registry() override { return *registry_; }

 private:
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
};

// Names, in one place, so ExportedMetricNames() cannot drift from what is registered.
constexpr char kRequests[] = "tessera_requests_total";
constexpr char kPromptTokens[] = "tessera_prompt_tokens_total";
constexpr char kGeneratedTokens[] = "tessera_generated_tokens_total";
constexpr char kTtft[] = "tessera_time_to_first_token_seconds";
constexpr char kItl[] = "tessera_inter_token_latency_seconds";
constexpr char kDuration[] = "tessera_request_duration_seconds";
constexpr char kQueueWait[] = "tessera_queue_wait_seconds";
constexpr char kWaiting[] = "tessera_waiting_requests";
constexpr char kRunning[] = "tessera_running_sequences";
constexpr char kKvUsed[] = "tessera_kv_cache_blocks_used";
constexpr char kKvTotal[] = "tessera_kv_cache_capacity_blocks";
constexpr char kReplicaReady[] = "tessera_replica_ready";
constexpr char kBatchSeqs[] = "tessera_batch_sequences";
constexpr char kBatchTokens[] = "tessera_batch_tokens";
constexpr char kStepDuration[] = "tessera_step_duration_seconds";
constexpr char kWorkerUp[] = "tessera_worker_up";
constexpr char kMemory[] = "tessera_device_memory_bytes";
constexpr char kMemoryTotal[] = "tessera_device_memory_total_bytes";
constexpr char kLoadSeconds[] = "tessera_model_load_seconds";
constexpr char kLoadedBytes[] = "tessera_model_loaded_bytes_total";
constexpr char kWorkerStep[] = "tessera_worker_step_seconds";
constexpr char kCollectiveSeconds[] = "tessera_collective_seconds_total";
constexpr char kCollectiveOps[] = "tessera_collective_operations_total";

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& address) {
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve /metrics on ", address, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry);
  return std::unique_ptr<MetricsExporter>(
      new ExporterImpl(std::move(exposer), std::move(registry)));
}

// ---------------------------------------------------------------- coordinator

struct CoordinatorMetrics::Families {
  explicit Families(prometheus::Registry& r)
      : requests(BuildCounter().Name(kRequests).Help("Requests finished, by outcome").Register(r)),
        prompt_tokens(BuildCounter()
                          .Name(kPromptTokens)
                          .Help("Prompt tokens of admitted requests")
                          .Register(r)
                          .Add({})),
        generated_tokens(BuildCounter()
                             .Name(kGeneratedTokens)
                             .Help("Tokens generated and streamed to clients")
                             .Register(r)
                             .Add({})),
        ttft(BuildHistogram()
                 .Name(kTtft)
                 .Help("Request received to first token sampled")
                 .Register(r)
                 .Add({}, kTtftBuckets)),
        itl(BuildHistogram()
                .Name(kItl)
                .Help("Time between consecutive tokens of a sequence")
                .Register(r)
                .Add({}, kItlBuckets)),
        duration(BuildHistogram()
                     .Name(kDuration)
                     .Help("Request received to last token")
                     .Register(r)
                     .Add({}, kDurationBuckets)),
        queue_wait(BuildHistogram()
                       .Name(kQueueWait)
                       .Help("Request received to admitted into a batch")
                       .Register(r)
                       .Add({}, kQueueBuckets)),
        waiting(BuildGauge().Name(kWaiting).Help("Requests queued, not admitted").Register(r)),
        running(BuildGauge().Name(kRunning).Help("Sequences admitted and running").Register(r)),
        kv_used(BuildGauge().Name(kKvUsed).Help("KV-cache blocks in use").Register(r)),
        kv_total(BuildGauge().Name(kKvTotal).Help("KV-cache blocks of the replica").Register(r)),
        replica_ready(BuildGauge()
                          .Name(kReplicaReady)
                          .Help("1 when the replica group is ready to serve")
                          .Register(r)),
        batch_seqs(BuildHistogram()
                       .Name(kBatchSeqs)
                       .Help("Sequences per scheduler step")
                       .Register(r)),
        batch_tokens(BuildHistogram()
                         .Name(kBatchTokens)
                         .Help("Tokens per scheduler step (prefill chunks + decode tokens)")
                         .Register(r)),
        step_duration(BuildHistogram()
                          .Name(kStepDuration)
                          .Help("Duration of one scheduler step on a replica group, by phase")
                          .Register(r)),
        worker_up(BuildGauge()
                      .Name(kWorkerUp)
                      .Help("1 while the worker is registered with the coordinator")
                      .Register(r)),
        memory(BuildGauge()
                   .Name(kMemory)
                   .Help("Device memory in use, by category (weights, kv_cache, workspace)")
                   .Register(r)),
        memory_total(BuildGauge()
                         .Name(kMemoryTotal)
                         .Help("Device memory of the worker's device")
                         .Register(r)) {}

  Family<Counter>& requests;
  Counter& prompt_tokens;
  Counter& generated_tokens;
  Histogram& ttft;
  Histogram& itl;
  Histogram& duration;
  Histogram& queue_wait;
  Family<Gauge>& waiting;
  Family<Gauge>& running;
  Family<Gauge>& kv_used;
  Family<Gauge>& kv_total;
  Family<Gauge>& replica_ready;
  Family<Histogram>& batch_seqs;
  Family<Histogram>& batch_tokens;
  Family<Histogram>& step_duration;
  Family<Gauge>& worker_up;
  Family<Gauge>& memory;
  Family<Gauge>& memory_total;
};

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry)
    : f_(std::make_unique<Families>(registry)) {}
CoordinatorMetrics::~CoordinatorMetrics() = default;

void CoordinatorMetrics::RequestFinished(absl::string_view outcome) {
  f_->requests.Add({{"outcome", std::string(outcome)}}).Increment();
}
void CoordinatorMetrics::PromptTokens(int64_t n) { f_->prompt_tokens.Increment(n); }
void CoordinatorMetrics::GeneratedTokens(int64_t n) { f_->generated_tokens.Increment(n); }
void CoordinatorMetrics::TimeToFirstToken(double s) { f_->ttft.Observe(s); }
void CoordinatorMetrics::InterTokenLatency(double s) { f_->itl.Observe(s); }
void CoordinatorMetrics::RequestDuration(double s) { f_->duration.Observe(s); }
void CoordinatorMetrics::QueueWait(double s) { f_->queue_wait.Observe(s); }

void CoordinatorMetrics::SetQueue(int replica, int64_t waiting, int64_t running) {
  const Labels l = {{"replica", absl::StrCat(replica)}};
  f_->waiting.Add(l).Set(static_cast<double>(waiting));
  f_->running.Add(l).Set(static_cast<double>(running));
}

void CoordinatorMetrics::SetKvBlocks(int replica, int64_t used, int64_t total) {
  const Labels l = {{"replica", absl::StrCat(replica)}};
  f_->kv_used.Add(l).Set(static_cast<double>(used));
  f_->kv_total.Add(l).Set(static_cast<double>(total));
}

void CoordinatorMetrics::SetReplicaReady(int replica, bool ready) {
  f_->replica_ready.Add({{"replica", absl::StrCat(replica)}}).Set(ready ? 1 : 0);
}

void CoordinatorMetrics::Step(int replica, int64_t sequences, int64_t tokens, bool has_prefill,
                              double seconds) {
  const std::string r = absl::StrCat(replica);
  f_->batch_seqs.Add({{"replica", r}}, kBatchBuckets).Observe(static_cast<double>(sequences));
  f_->batch_tokens.Add({{"replica", r}}, kBatchTokenBuckets).Observe(static_cast<double>(tokens));
  f_->step_duration
      .Add({{"replica", r}, {"phase", has_prefill ? "prefill" : "decode"}}, kStepBuckets)
      .Observe(seconds);
}

void CoordinatorMetrics::SetWorkerUp(const WorkerLabels& w, bool up) {
  f_->worker_up.Add(WorkerLabelSet(w)).Set(up ? 1 : 0);
}

void CoordinatorMetrics::SetWorkerMemory(const WorkerLabels& w, int64_t total, int64_t weights,
                                         int64_t kv_cache, int64_t workspace) {
  const Labels l = WorkerLabelSet(w);
  f_->memory_total.Add(l).Set(static_cast<double>(total));
  f_->memory.Add(With(l, "category", "weights")).Set(static_cast<double>(weights));
  f_->memory.Add(With(l, "category", "kv_cache")).Set(static_cast<double>(kv_cache));
  f_->memory.Add(With(l, "category", "workspace")).Set(static_cast<double>(workspace));
}

// ---------------------------------------------------------------- worker

struct WorkerMetrics::Families {
  explicit Families(prometheus::Registry& r)
      : memory(BuildGauge()
                   .Name(kMemory)
                   .Help("Device memory in use, by category (weights, kv_cache, workspace)")
                   .Register(r)),
        memory_total(BuildGauge()
                         .Name(kMemoryTotal)
                         .Help("Device memory of the worker's device")
                         .Register(r)),
        load_seconds(BuildGauge()
                         .Name(kLoadSeconds)
                         .Help("Duration of the last shard load (weights and KV cache)")
                         .Register(r)),
        loaded_bytes(BuildCounter()
                         .Name(kLoadedBytes)
                         .Help("Weight bytes loaded onto the device")
                         .Register(r)),
        step(BuildHistogram()
                 .Name(kWorkerStep)
                 .Help("One step's forward pass and sampling on this worker")
                 .Register(r)),
        collective_seconds(BuildCounter()
                               .Name(kCollectiveSeconds)
                               .Help("Time spent in Communicator operations, by op")
                               .Register(r)),
        collective_ops(BuildCounter()
                           .Name(kCollectiveOps)
                           .Help("Communicator operations, by op")
                           .Register(r)) {}
  Family<Gauge>& memory;
  Family<Gauge>& memory_total;
  Family<Gauge>& load_seconds;
  Family<Counter>& loaded_bytes;
  Family<Histogram>& step;
  Family<Counter>& collective_seconds;
  Family<Counter>& collective_ops;
};

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry, WorkerLabels labels)
    : f_(std::make_unique<Families>(registry)), labels_(std::move(labels)) {}
WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::set_labels(WorkerLabels labels) { labels_ = std::move(labels); }

void WorkerMetrics::SetMemory(int64_t total, int64_t weights, int64_t kv_cache,
                              int64_t workspace) {
  const Labels l = WorkerLabelSet(labels_);
  f_->memory_total.Add(l).Set(static_cast<double>(total));
  f_->memory.Add(With(l, "category", "weights")).Set(static_cast<double>(weights));
  f_->memory.Add(With(l, "category", "kv_cache")).Set(static_cast<double>(kv_cache));
  f_->memory.Add(With(l, "category", "workspace")).Set(static_cast<double>(workspace));
}

void WorkerMetrics::ModelLoaded(double seconds, int64_t bytes) {
  const Labels l = WorkerLabelSet(labels_);
  f_->load_seconds.Add(l).Set(seconds);
  f_->loaded_bytes.Add(l).Increment(static_cast<double>(bytes));
}

void WorkerMetrics::StepComputed(double seconds) {
  f_->step.Add(WorkerLabelSet(labels_), kStepBuckets).Observe(seconds);
}

void WorkerMetrics::Collective(absl::string_view op, double seconds) {
  const Labels l = With(WorkerLabelSet(labels_), "op", std::string(op));
  f_->collective_seconds.Add(l).Increment(seconds);
  f_->collective_ops.Add(l).Increment();
}

std::vector<std::string> ExportedMetricNames() {
  return {kRequests,     kPromptTokens, kGeneratedTokens, kTtft,         kItl,
          kDuration,     kQueueWait,    kWaiting,         kRunning,      kKvUsed,
          kKvTotal,      kReplicaReady, kBatchSeqs,       kBatchTokens,  kStepDuration,
          kWorkerUp,     kMemory,       kMemoryTotal,     kLoadSeconds,  kLoadedBytes,
          kWorkerStep,   kCollectiveSeconds, kCollectiveOps};
}

}  // namespace tessera
