#include "server/metrics.h"

#include <algorithm>

#include <fmt/format.h>

#include "nibble/engine.h"

namespace nibble::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard lock(mutex_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard lock(mutex_);
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum_, name, count_);
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160}),
      time_per_output_token_({0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5}),
      e2e_latency_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640}) {}

void Metrics::record_request(double ttft, double e2e, int64_t completion_tokens, bool cancelled) {
  if (cancelled) {
    ++requests_cancelled_;
    return;
  }
  ++requests_finished_;
  if (completion_tokens > 0) ttft_.observe(ttft);
  if (completion_tokens > 1)
    time_per_output_token_.observe((e2e - ttft) / double(completion_tokens - 1));
  e2e_latency_.observe(e2e);
}

namespace {

void gauge(std::string& out, const std::string& name, const std::string& help, double value,
           const char* type = "gauge") {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

}  // namespace

std::string Metrics::render(const EngineStats& stats, const std::string& model_name) const {
  std::string out;
  const double kv_usage = stats.kv_tokens_total > 0
                              ? double(stats.kv_tokens_used) / double(stats.kv_tokens_total)
                              : 0.0;
  const double hit_rate = stats.prompt_tokens_total > 0 ? double(stats.cached_prompt_tokens_total) /
                                                              double(stats.prompt_tokens_total)
                                                        : 0.0;
  out += fmt::format(
      "# HELP nibble:model_info The served model.\n# TYPE nibble:model_info gauge\n"
      "nibble:model_info{{model_name=\"{}\"}} 1\n",
      model_name);
  gauge(out, "nibble:num_running_reqs", "Requests being decoded.", double(stats.running_requests));
  gauge(out, "nibble:num_queue_reqs", "Requests waiting for a slot.",
        double(stats.waiting_requests));
  gauge(out, "nibble:token_usage", "Fraction of the KV cache in use.", kv_usage);
  gauge(out, "nibble:kv_cache_tokens_used", "KV cache tokens in use.",
        double(stats.kv_tokens_used));
  gauge(out, "nibble:kv_cache_tokens_cached",
        "Of the KV tokens in use, those held only by the prefix cache (evictable).",
        double(stats.kv_tokens_cached));
  gauge(out, "nibble:num_preemptions_total", "Requests paused for lack of KV space.",
        double(stats.preemptions_total), "counter");
  gauge(out, "nibble:kv_cache_tokens_total", "KV cache capacity in tokens.",
        double(stats.kv_tokens_total));
  gauge(out, "nibble:cache_hit_rate",
        "Prompt tokens served from the prefix cache / all prompt tokens.", hit_rate);
  gauge(out, "nibble:prompt_tokens_total", "Prompt tokens processed.",
        double(stats.prompt_tokens_total), "counter");
  gauge(out, "nibble:generation_tokens_total", "Tokens generated.",
        double(stats.generation_tokens_total), "counter");
  gauge(out, "nibble:cached_tokens_total", "Prompt tokens served from the prefix cache.",
        double(stats.cached_prompt_tokens_total), "counter");
  gauge(out, "nibble:num_requests_total", "Requests (choices) finished.",
        double(requests_finished_.load()), "counter");
  gauge(out, "nibble:num_aborted_requests_total", "Requests cancelled (client gone, shutdown).",
        double(requests_cancelled_.load()), "counter");
  gauge(out, "nibble:http_errors_total", "Requests answered with an error status.",
        double(http_errors_.load()), "counter");
  ttft_.render(out, "nibble:time_to_first_token_seconds", "Time to first token.");
  time_per_output_token_.render(out, "nibble:time_per_output_token_seconds",
                                "Time per output token after the first.");
  e2e_latency_.render(out, "nibble:e2e_request_latency_seconds", "End-to-end request latency.");
  return out;
}

}  // namespace nibble::server
