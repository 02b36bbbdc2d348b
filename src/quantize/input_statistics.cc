#include "quantize/input_statistics.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quantize/calibration_kernels.h"

namespace nibble::quantize {

InputStatistics::InputStatistics(int64_t k, bool want_hessian, int64_t keep_every, int64_t keep_max)
    : k_(k), keep_every_(keep_every), keep_max_(keep_max) {
  if (want_hessian) xtx_.assign(size_t(k * k), 0.0);
  abs_sum_.assign(size_t(k), 0.0);
  square_sum_.assign(size_t(k), 0.0);
  max_abs_.assign(size_t(k), 0.0f);
}

void InputStatistics::add(const float* x, int64_t m) {
  if (m <= 0) return;
  // Columns split over the pool; each column still sums its rows in order.
  ThreadPool::global().parallel_for(k_, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < m; ++r) {
      const float* row = x + r * k_;
      for (int64_t c = c0; c < c1; ++c) {
        const float a = std::fabs(row[c]);
        abs_sum_[size_t(c)] += a;
        square_sum_[size_t(c)] += double(a) * double(a);
        max_abs_[size_t(c)] = std::max(max_abs_[size_t(c)], a);
      }
    }
  });
  for (int64_t r = 0; r < m; ++r)
    if (keep_every_ > 0 && (n_ + r) % keep_every_ == 0 && kept_count() < keep_max_)
      kept_.insert(kept_.end(), x + r * k_, x + (r + 1) * k_);
  if (!xtx_.empty()) accumulate_gram(x, m, k_, xtx_.data());
  n_ += m;
}

std::vector<double> InputStatistics::hessian() const {
  NIBBLE_CHECK(!xtx_.empty() && n_ > 0, "quantize: no Hessian was collected for this layer");
  std::vector<double> h(xtx_.size());
  const double s = 2.0 / double(n_);
  for (size_t i = 0; i < h.size(); ++i) h[i] = xtx_[i] * s;
  return h;
}

std::vector<float> InputStatistics::mean_abs() const {
  std::vector<float> out(static_cast<size_t>(k_));
  for (int64_t c = 0; c < k_; ++c)
    out[size_t(c)] = n_ > 0 ? float(abs_sum_[size_t(c)] / double(n_)) : 0.0f;
  return out;
}

std::vector<float> InputStatistics::mean_square() const {
  std::vector<float> out(static_cast<size_t>(k_), 0.0f);
  if (n_ <= 0) return out;
  if (!square_sum_.empty()) {
    for (int64_t c = 0; c < k_; ++c) out[size_t(c)] = float(square_sum_[size_t(c)] / double(n_));
    return out;
  }
  NIBBLE_CHECK(!xtx_.empty(),
               "quantize: these calibration statistics hold no mean x² (saved before it was "
               "collected); calibrate again");
  for (int64_t c = 0; c < k_; ++c) out[size_t(c)] = float(xtx_[size_t(c * k_ + c)] / double(n_));
  return out;
}

void InputStatistics::rescale_inputs(const std::vector<float>& s) {
  NIBBLE_CHECK(int64_t(s.size()) == k_, "rescale_inputs: {} scales for K={}", s.size(), k_);
  for (int64_t i = 0; i < k_; ++i) {
    const double si = s[size_t(i)];
    abs_sum_[size_t(i)] /= si;
    if (!square_sum_.empty()) square_sum_[size_t(i)] /= si * si;
    max_abs_[size_t(i)] = float(max_abs_[size_t(i)] / si);
    if (!xtx_.empty())
      for (int64_t j = 0; j < k_; ++j) xtx_[size_t(i * k_ + j)] /= si * double(s[size_t(j)]);
  }
  for (size_t r = 0; r < kept_.size(); ++r) kept_[r] /= s[r % size_t(k_)];
}

void InputStatistics::restore(int64_t n, std::vector<double> hessian_sum,
                              std::vector<double> abs_sum, std::vector<float> max_abs,
                              std::vector<float> kept, std::vector<double> square_sum) {
  NIBBLE_CHECK(int64_t(abs_sum.size()) == k_ && int64_t(max_abs.size()) == k_ &&
                   (hessian_sum.empty() || int64_t(hessian_sum.size()) == k_ * k_) &&
                   int64_t(kept.size()) % std::max<int64_t>(k_, 1) == 0 &&
                   (square_sum.empty() || int64_t(square_sum.size()) == k_),
               "calibration file: statistics of the wrong size for K={}", k_);
  n_ = n;
  xtx_ = std::move(hessian_sum);
  abs_sum_ = std::move(abs_sum);
  max_abs_ = std::move(max_abs);
  kept_ = std::move(kept);
  square_sum_ = std::move(square_sum);
}

}  // namespace nibble::quantize
