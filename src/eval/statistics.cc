#include "eval/statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nibble::eval {

double log_sum_exp(std::span<const float> logits) {
  if (logits.empty()) return -std::numeric_limits<double>::infinity();
  const float peak = *std::max_element(logits.begin(), logits.end());
  if (!std::isfinite(peak)) return double(peak);
  double sum = 0.0;
  for (const float x : logits) sum += std::exp(double(x) - double(peak));
  return double(peak) + std::log(sum);
}

void log_softmax(std::span<const float> logits, std::span<float> out) {
  const double lse = log_sum_exp(logits);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = float(double(logits[i]) - lse);
}

int64_t argmax(std::span<const float> values) {
  int64_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[size_t(best)]) best = int64_t(i);
  }
  return best;
}

double quantile(std::vector<double> samples, double q) {
  if (samples.empty()) return 0.0;
  std::sort(samples.begin(), samples.end());
  const double pos = q * double(samples.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, samples.size() - 1);
  const double frac = pos - double(lo);
  return samples[lo] + (samples[hi] - samples[lo]) * frac;
}

SampleSummary summarize(std::span<const double> samples) {
  SampleSummary s;
  s.count = int64_t(samples.size());
  if (samples.empty()) return s;
  // Two passes (mean, then squared deviations): stays accurate
  // over the hundreds of thousands of NLL samples of a full perplexity run.
  double sum = 0.0;
  for (const double x : samples) sum += x;
  s.mean = sum / double(samples.size());
  if (samples.size() > 1) {
    double sq = 0.0;
    for (const double x : samples) sq += (x - s.mean) * (x - s.mean);
    const double variance = sq / double(samples.size() - 1);
    s.std_error = std::sqrt(variance / double(samples.size()));
  }
  std::vector<double> sorted(samples.begin(), samples.end());
  std::sort(sorted.begin(), sorted.end());
  s.min = sorted.front();
  s.max = sorted.back();
  s.median = quantile(sorted, 0.5);
  s.p99 = quantile(std::move(sorted), 0.99);
  return s;
}

Histogram make_histogram(std::span<const double> samples, int bins, double lo, double hi) {
  Histogram h;
  h.lo = lo;
  h.hi = hi;
  h.counts.assign(size_t(std::max(bins, 1)), 0);
  const double width = (hi - lo) / double(h.counts.size());
  for (const double x : samples) {
    int64_t bin = width > 0 ? int64_t(std::floor((x - lo) / width)) : 0;
    bin = std::clamp<int64_t>(bin, 0, int64_t(h.counts.size()) - 1);
    ++h.counts[size_t(bin)];
  }
  return h;
}

}  // namespace nibble::eval
