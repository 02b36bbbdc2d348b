#pragma once
// Prometheus metrics. Names mirror SGLang's (sglang:num_running_reqs, ...) under the
// `nibble:` prefix, so dashboards built for SGLang need only the prefix changed.
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace nibble {
struct EngineStats;
}

namespace nibble::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One finished request (per choice): latencies in seconds.
  void record_request(double ttft, double e2e, int64_t completion_tokens, bool cancelled);
  void count_http_error() { ++http_errors_; }

  std::string render(const EngineStats& stats, const std::string& model_name) const;

 private:
  Histogram ttft_, time_per_output_token_, e2e_latency_;
  std::atomic<int64_t> requests_finished_{0}, requests_cancelled_{0}, http_errors_{0};
};

}  // namespace nibble::server
