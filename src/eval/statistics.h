#pragma once
// Numerics shared by the evaluations: log-softmax over a vocabulary row and summaries of
// per-token samples (mean with its standard error, quantiles, histogram).
#include <cstdint>
#include <span>
#include <vector>

namespace nibble::eval {

// log(sum(exp(x))) computed around the maximum so that large logits do not overflow.
double log_sum_exp(std::span<const float> logits);

// Writes log-probabilities (logits - logsumexp) into `out` (same length as `logits`).
void log_softmax(std::span<const float> logits, std::span<float> out);

// Index of the largest value; the lowest index wins a tie (as torch.argmax does).
int64_t argmax(std::span<const float> values);

struct SampleSummary {
  int64_t count = 0;
  double mean = 0.0;
  double std_error = 0.0;  // sample standard deviation / sqrt(count); 0 below two samples
  double median = 0.0;
  double p99 = 0.0;
  double max = 0.0;
  double min = 0.0;
};

// Quantiles use linear interpolation between order statistics (numpy's default).
SampleSummary summarize(std::span<const double> samples);
double quantile(std::vector<double> samples, double q);

struct Histogram {
  double lo = 0.0, hi = 0.0;    // range of the bins; values outside land in the end bins
  std::vector<int64_t> counts;  // equal-width bins over [lo, hi]
};
Histogram make_histogram(std::span<const double> samples, int bins, double lo, double hi);

}  // namespace nibble::eval
