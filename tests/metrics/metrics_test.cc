// The metric families as Prometheus sees them: start the exporter on a free loopback port,
// record, fetch /metrics over plain HTTP and read the text exposition format back.
#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

// GET http://127.0.0.1:port/metrics; the whole response (headers and body).
std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// The value of the sample line that starts with `series` ("name{labels}" exactly as printed).
double Sample(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      return std::stod(std::string(line.substr(series.size() + 1)));
    }
  }
  ADD_FAILURE() << "no sample " << series << " in:\n" << text;
  return -1;
}

TEST(MetricsTest, CoordinatorFamiliesAreExposedWithTheirValues) {
  absl::StatusOr<std::unique_ptr<MetricsExporter>> exporter =
      MetricsExporter::Start("127.0.0.1:0");
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  ASSERT_GT((*exporter)->port(), 0);
  CoordinatorMetrics m((*exporter)->registry());
  m.RequestFinished("eos");
  m.RequestFinished("eos");
  m.RequestFinished("cancelled");
  m.PromptTokens(7);
  m.GeneratedTokens(5);
  m.GeneratedTokens(3);
  m.TimeToFirstToken(0.03);
  m.InterTokenLatency(0.004);
  m.RequestDuration(1.5);
  m.QueueWait(0.002);
  m.SetQueue(0, 4, 2);
  m.SetKvBlocks(0, 10, 100);
  m.SetReplicaReady(0, true);
  m.Step(0, 3, 40, true, 0.02);
  WorkerLabels w{"w1", "0", "1", "0", "cpu"};
  m.SetWorkerUp(w, true);
  m.SetWorkerMemory(w, 1000, 600, 300, 50);

  const std::string text = Scrape((*exporter)->port());
  ASSERT_TRUE(absl::StrContains(text, "200 OK")) << text;
  EXPECT_EQ(Sample(text, "tessera_requests_total{outcome=\"eos\"}"), 2);
  EXPECT_EQ(Sample(text, "tessera_requests_total{outcome=\"cancelled\"}"), 1);
  EXPECT_EQ(Sample(text, "tessera_prompt_tokens_total"), 7);
  EXPECT_EQ(Sample(text, "tessera_generated_tokens_total"), 8);
  // 0.03 s falls in the (0.025, 0.05] bucket: cumulative counts 0 below, 1 from 0.05 on.
  EXPECT_EQ(Sample(text, "tessera_time_to_first_token_seconds_bucket{le=\"0.025\"}"), 0);
  EXPECT_EQ(Sample(text, "tessera_time_to_first_token_seconds_bucket{le=\"0.05\"}"), 1);
  EXPECT_EQ(Sample(text, "tessera_time_to_first_token_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(Sample(text, "tessera_time_to_first_token_seconds_sum"), 0.03);
  EXPECT_EQ(Sample(text, "tessera_waiting_requests{replica=\"0\"}"), 4);
  EXPECT_EQ(Sample(text, "tessera_running_sequences{replica=\"0\"}"), 2);
  EXPECT_EQ(Sample(text, "tessera_kv_cache_blocks_used{replica=\"0\"}"), 10);
  EXPECT_EQ(Sample(text, "tessera_kv_cache_capacity_blocks{replica=\"0\"}"), 100);
  EXPECT_EQ(Sample(text, "tessera_replica_ready{replica=\"0\"}"), 1);
  EXPECT_EQ(Sample(text,
                   "tessera_step_duration_seconds_count{phase=\"prefill\",replica=\"0\"}"),
            1);
  const std::string wl = "device=\"cpu\",rank=\"1\",replica=\"0\",stage=\"0\",worker=\"w1\"";
  EXPECT_EQ(Sample(text, "tessera_worker_up{" + wl + "}"), 1);
  EXPECT_EQ(Sample(text, "tessera_device_memory_bytes{category=\"kv_cache\"," + wl + "}"), 300);
  EXPECT_EQ(Sample(text, "tessera_device_memory_total_bytes{" + wl + "}"), 1000);
}

TEST(MetricsTest, EveryExportedNameIsRegisteredAndNamedByTheConventions) {
  absl::StatusOr<std::unique_ptr<MetricsExporter>> exporter =
      MetricsExporter::Start("127.0.0.1:0");
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  // Coordinator and worker families share one registry in this test (as they would in a
  // process that runs both): the shared memory families must merge, not clash.
  CoordinatorMetrics c((*exporter)->registry());
  WorkerMetrics w((*exporter)->registry(), WorkerLabels{"w", "0", "0", "0", "cpu"});
  w.SetMemory(10, 5, 3, 1);
  w.ModelLoaded(0.5, 5);
  w.StepComputed(0.01);
  w.Collective("all_reduce", 0.001);
  // Labelled families appear once they have a child: record into every one.
  c.RequestFinished("length");
  c.SetQueue(0, 0, 0);
  c.SetKvBlocks(0, 0, 1);
  c.SetReplicaReady(0, false);
  c.Step(0, 1, 1, false, 0.001);
  c.SetWorkerUp(WorkerLabels{"w", "0", "0", "0", "cpu"}, true);
  const std::string text = Scrape((*exporter)->port());
  std::set<std::string> typed;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      ASSERT_EQ(parts.size(), 4u) << line;
      if (!absl::StartsWith(parts[2], "tessera_")) continue;  // the exporter's own
      typed.insert(parts[2]);
      // Prometheus naming (and promtool): counters end in _total, nothing else does.
      EXPECT_EQ(parts[3] == "counter", absl::EndsWith(parts[2], "_total")) << line;
    }
  }
  for (const std::string& name : ExportedMetricNames()) {
    EXPECT_TRUE(absl::StartsWith(name, "tessera_")) << name;
    EXPECT_EQ(typed.count(name), 1u) << name << " is not exported:\n" << text;
  }
  EXPECT_EQ(typed.size(), ExportedMetricNames().size()) << text;
}

TEST(MetricsTest, BusyPortIsAClearError) {
  absl::StatusOr<std::unique_ptr<MetricsExporter>> first = MetricsExporter::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsExporter>> second = MetricsExporter::Start(taken);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(), taken)) << second.status();
}

}  // namespace
}  // namespace tessera
