// Prints every Prometheus metric family name Tessera exports (tessera::ExportedMetricNames()),
// one per line. tests/python/test_deploy.py checks the Grafana dashboard and the alerting rules
// against this list, so no panel or alert can point at a metric the code does not export.
#include <cstdio>
#include <string>

#include "metrics/metrics.h"

int main() {
  for (const std::string& name : tessera::ExportedMetricNames()) std::printf("%s\n", name.c_str());
  return 0;
}
