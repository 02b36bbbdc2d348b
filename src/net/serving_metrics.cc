#include "net/serving_metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace nibble::net {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(values.size() - 1);
  const auto below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (rank - double(below)) * (values[above] - values[below]);
}

Distribution distribution(const std::vector<double>& values) {
  Distribution d;
  if (values.empty()) return d;
  const double n = double(values.size());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double squares = 0.0;
  for (const double v : values) squares += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(squares / n);  // population std, as numpy.std
  d.median = percentile(values, 50);
  d.p90 = percentile(values, 90);
  d.p99 = percentile(values, 99);
  d.max = *std::max_element(values.begin(), values.end());
  return d;
}

namespace {

std::vector<double> in_ms(std::vector<double> seconds) {
  for (double& v : seconds) v *= 1000.0;
  return seconds;
}

nlohmann::json distribution_json(const Distribution& d) {
  return {{"mean", d.mean}, {"median", d.median}, {"std", d.std},
          {"p90", d.p90},   {"p99", d.p99},       {"max", d.max}};
}

}  // namespace

ServingSummary summarize(const std::vector<RequestOutcome>& outcomes, double duration_s) {
  ServingSummary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestOutcome& r : outcomes) {
    if (!r.success) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2e.push_back(r.latency_s);
    if (r.output_tokens > 1) {
      tpot.push_back((r.latency_s - r.ttft_s) / double(r.output_tokens - 1));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  if (duration_s > 0) {
    s.request_throughput = double(s.completed) / duration_s;
    s.input_throughput = double(s.total_input_tokens) / duration_s;
    s.output_throughput = double(s.total_output_tokens) / duration_s;
    s.total_throughput = s.input_throughput + s.output_throughput;
    s.concurrency = std::accumulate(e2e.begin(), e2e.end(), 0.0) / duration_s;
  }
  s.ttft_ms = distribution(in_ms(ttft));
  s.tpot_ms = distribution(in_ms(tpot));
  s.itl_ms = distribution(in_ms(itl));
  s.e2e_ms = distribution(in_ms(e2e));
  return s;
}

nlohmann::json to_json(const ServingSummary& s) {
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"duration", s.duration_s},
          {"total_input_tokens", s.total_input_tokens},
          {"total_output_tokens", s.total_output_tokens},
          {"request_throughput", s.request_throughput},
          {"input_throughput", s.input_throughput},
          {"output_throughput", s.output_throughput},
          {"total_throughput", s.total_throughput},
          {"concurrency", s.concurrency},
          {"ttft_ms", distribution_json(s.ttft_ms)},
          {"tpot_ms", distribution_json(s.tpot_ms)},
          {"itl_ms", distribution_json(s.itl_ms)},
          {"e2e_latency_ms", distribution_json(s.e2e_ms)}};
}

std::string format_table(const ServingSummary& s, const std::vector<std::string>& header) {
  std::string out = fmt::format("{:=^50}\n", " Serving Benchmark Result ");
  const auto row = [&out](std::string_view name, auto value) {
    if constexpr (std::is_floating_point_v<decltype(value)>) {
      out += fmt::format("{:<40}{:>10.2f}\n", name, value);
    } else {
      out += fmt::format("{:<40}{:>10}\n", name, value);
    }
  };
  for (const std::string& line : header) out += line + "\n";
  row("Successful requests:", s.completed);
  row("Failed requests:", s.failed);
  row("Benchmark duration (s):", s.duration_s);
  row("Total input tokens:", s.total_input_tokens);
  row("Total generated tokens:", s.total_output_tokens);
  row("Request throughput (req/s):", s.request_throughput);
  row("Input token throughput (tok/s):", s.input_throughput);
  row("Output token throughput (tok/s):", s.output_throughput);
  row("Total token throughput (tok/s):", s.total_throughput);
  row("Concurrency:", s.concurrency);
  const auto section = [&](std::string_view title, std::string_view name, const Distribution& d) {
    out += fmt::format("{:-^50}\n", title);
    row(fmt::format("Mean {} (ms):", name), d.mean);
    row(fmt::format("Median {} (ms):", name), d.median);
    row(fmt::format("P99 {} (ms):", name), d.p99);
  };
  section("End-to-End Latency", "E2E Latency", s.e2e_ms);
  section("Time to First Token", "TTFT", s.ttft_ms);
  section("Time per Output Token (excl. 1st token)", "TPOT", s.tpot_ms);
  section("Inter-Token Latency", "ITL", s.itl_ms);
  out += std::string(50, '=') + "\n";
  return out;
}

}  // namespace nibble::net
