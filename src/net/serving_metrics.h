#pragma once
// What a serving benchmark measures per request, and the summary over a run, with the
// definitions SGLang's bench_serving uses so that numbers compare across tools:
//   TTFT  time from sending the request to the first chunk that carries output text;
//   ITL   the gaps between successive text chunks of one stream (all gaps of all requests);
//   TPOT  per request, (E2E - TTFT) / (output tokens - 1), for requests with > 1 token;
//   E2E   time from sending the request to the end of its response.
// Percentiles interpolate linearly between order statistics (numpy's default).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble::net {

struct RequestOutcome {
  bool success = false;
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double ttft_s = 0.0;
  double latency_s = 0.0;
  std::vector<double> itl_s;
  std::string generated_text;
};

struct Distribution {
  double mean = 0.0, median = 0.0, std = 0.0, p90 = 0.0, p99 = 0.0, max = 0.0;
};

// `p` in [0, 100]; 0 for an empty sample.
double percentile(std::vector<double> values, double p);
Distribution distribution(const std::vector<double>& values);

struct ServingSummary {
  int64_t completed = 0, failed = 0;
  double duration_s = 0.0;
  int64_t total_input_tokens = 0, total_output_tokens = 0;
  double request_throughput = 0.0, input_throughput = 0.0, output_throughput = 0.0,
         total_throughput = 0.0;
  double concurrency = 0.0;  // sum of E2E latencies / duration: mean requests in flight
  Distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;
};

// Only successful requests count toward tokens and latencies.
ServingSummary summarize(const std::vector<RequestOutcome>& outcomes, double duration_s);

nlohmann::json to_json(const ServingSummary& summary);

// The result table, in bench_serving's layout.
std::string format_table(const ServingSummary& summary, const std::vector<std::string>& header);

}  // namespace nibble::net
