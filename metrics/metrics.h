// Prometheus metrics of every Tessera process (prometheus-cpp, pull model): a MetricsExporter
// serves /metrics on --metrics-port; CoordinatorMetrics and WorkerMetrics are the families each
// process records into. Names follow Prometheus conventions: `tessera_` prefix, base units
// (seconds, bytes), `_total` for counters; histogram buckets chosen for LLM serving (TTFT from
// 5 ms to 60 s, inter-token latency from 1 ms to 2 s).
//
// Every recording method is cheap and thread-safe (prometheus-cpp metrics are atomic); label
// children are created on first use. A null metrics pointer means "not exported": callers check
// before recording (`if (metrics_) metrics_->...`).
//
// The list of exported names is ExportedMetricNames(): the Grafana dashboard and the alerting
// rules are checked against it in tests, so a panel cannot point at a metric that does not exist.
#ifndef TESSERA_METRICS_METRICS_H_
#define TESSERA_METRICS_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace tessera {

// Serves a registry on http://ADDRESS/metrics.
class MetricsExporter {
 public:
  // `address` is "host:port" ("0.0.0.0:9400"; port 0 picks a free one, see port()).
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(const std::string& address);
  virtual ~MetricsExporter() = default;
  virtual int port() const = 0;
  virtual prometheus::Registry& registry() = 0;
};

// Which worker a WorkerMetrics describes (labels worker, replica, rank, stage, device).
struct WorkerLabels {
  std::string worker;   // worker id
  std::string replica;  // "0"
  std::string rank;     // "2"
  std::string stage;    // pipeline stage "1"
  std::string device;   // "cpu", "cuda:0"
};

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(prometheus::Registry& registry);
  ~CoordinatorMetrics();

  // tessera_requests_total{outcome}: outcome is a finish reason ("length", "stop", "eos",
  // "cancelled") or an error ("invalid_argument", "resource_exhausted", "unavailable",
  // "deadline_exceeded", "internal").
  void RequestFinished(absl::string_view outcome);
  // tessera_prompt_tokens_total, tessera_generated_tokens_total.
  void PromptTokens(int64_t n);
  void GeneratedTokens(int64_t n);
  // Histograms (seconds): tessera_time_to_first_token_seconds,
  // tessera_inter_token_latency_seconds, tessera_request_duration_seconds,
  // tessera_queue_wait_seconds.
  void TimeToFirstToken(double s);
  void InterTokenLatency(double s);
  void RequestDuration(double s);
  void QueueWait(double s);
  // Gauges per replica: tessera_waiting_requests{replica}, tessera_running_sequences{replica},
  // tessera_kv_cache_blocks_used{replica}, tessera_kv_cache_capacity_blocks{replica},
  // tessera_replica_ready{replica} (1/0).
  void SetQueue(int replica, int64_t waiting, int64_t running);
  void SetKvBlocks(int replica, int64_t used, int64_t total);
  void SetReplicaReady(int replica, bool ready);
  // One scheduler step: tessera_batch_sequences and tessera_batch_tokens (histograms) and
  // tessera_step_duration_seconds{phase} with phase "prefill" (the batch has a prompt chunk)
  // or "decode" (decode tokens only).
  void Step(int replica, int64_t sequences, int64_t tokens, bool has_prefill, double seconds);
  // Per worker as the coordinator sees it: tessera_worker_up{worker,replica,rank,stage,device}
  // (1 registered and in a ready group or loading, 0 gone), and its memory as reported in
  // Ready: tessera_device_memory_bytes{...,category="weights"|"kv_cache"|"workspace"} and
  // tessera_device_memory_total_bytes{...}.
  void SetWorkerUp(const WorkerLabels& w, bool up);
  void SetWorkerMemory(const WorkerLabels& w, int64_t total, int64_t weights, int64_t kv_cache,
                       int64_t workspace);

 private:
  struct Families;
  std::unique_ptr<Families> f_;
};

class WorkerMetrics {
 public:
  WorkerMetrics(prometheus::Registry& registry, WorkerLabels labels);
  ~WorkerMetrics();
  void set_labels(WorkerLabels labels);  // after an assignment (replica/rank/stage known)

  // tessera_device_memory_bytes{category}, tessera_device_memory_total_bytes (this worker).
  void SetMemory(int64_t total, int64_t weights, int64_t kv_cache, int64_t workspace);
  // tessera_model_load_seconds (gauge, last load), tessera_model_loaded_bytes_total.
  void ModelLoaded(double seconds, int64_t bytes);
  // tessera_worker_step_seconds (histogram): one step's forward pass and sampling.
  void StepComputed(double seconds);
  // tessera_collective_seconds_total{op} and tessera_collective_operations_total{op}, op is
  // "all_reduce", "all_gather", "send", "recv".
  void Collective(absl::string_view op, double seconds);

 private:
  struct Families;
  std::unique_ptr<Families> f_;
  WorkerLabels labels_;
};

// Every metric family name the code exports (for the dashboard and rules tests).
std::vector<std::string> ExportedMetricNames();

}  // namespace tessera

#endif  // TESSERA_METRICS_METRICS_H_
