#include "quantize/activation_scaling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace nibble::quantize {
namespace {

// Σ of squared differences between x·aᵀ and x·bᵀ over every output, a and b [rows, K].
double group_output_error(const std::vector<float>& x, int64_t m, const std::vector<float>& diff,
                          int64_t rows, int64_t k) {
  const cpu::DenseMatrix d(cpu::WeightType::F32, rows, k, diff);
  std::vector<float> y(static_cast<size_t>(m * rows));
  cpu::linear(d, nullptr, x.data(), m, y.data());
  double total = 0.0;
  for (float v : y) total += double(v) * double(v);
  return total;
}

}  // namespace

std::vector<float> smoothquant_scales(const std::vector<float>& act_max,
                                      const std::vector<GroupWeight>& weights, int64_t k,
                                      float alpha) {
  NIBBLE_CHECK(alpha >= 0.0f && alpha <= 1.0f, "smoothquant alpha {} is outside [0, 1]", alpha);
  std::vector<float> w_max(static_cast<size_t>(k), 0.0f);
  for (const GroupWeight& g : weights)
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t j = 0; j < k; ++j)
        w_max[size_t(j)] = std::max(w_max[size_t(j)], std::fabs((*g.w)[size_t(r * k + j)]));
  std::vector<float> s(static_cast<size_t>(k), 1.0f);
  for (int64_t j = 0; j < k; ++j) {
    const float a = act_max[size_t(j)], wm = std::max(w_max[size_t(j)], 1e-5f);
    if (a <= 0.0f) continue;
    s[size_t(j)] = std::max(std::pow(a, alpha) / std::pow(wm, 1.0f - alpha), 1e-5f);
  }
  return s;
}

void scale_weight_columns(const std::vector<GroupWeight>& weights, int64_t k,
                          const std::vector<float>& s) {
  for (const GroupWeight& g : weights)
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t j = 0; j < k; ++j) (*g.w)[size_t(r * k + j)] *= s[size_t(j)];
}

std::vector<float> awq_search_scales(const std::vector<float>& x, int64_t m,
                                     const std::vector<float>& mean_abs,
                                     const std::vector<GroupWeight>& weights, int64_t k,
                                     const IntQuantOptions& options, int n_grid, float& alpha) {
  std::vector<float> best(static_cast<size_t>(k), 1.0f);
  alpha = 0.0f;
  if (m == 0) return best;
  double best_err = std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(k)), scaled, diff;
  for (int step = 0; step < n_grid; ++step) {
    const float a = float(step) / float(n_grid);
    float lo = std::numeric_limits<float>::infinity(), hi = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      s[size_t(j)] = std::max(std::pow(std::max(mean_abs[size_t(j)], 1e-8f), a), 1e-4f);
      lo = std::min(lo, s[size_t(j)]);
      hi = std::max(hi, s[size_t(j)]);
    }
    const float norm = std::sqrt(lo * hi);
    for (float& v : s) v /= norm;
    double err = 0.0;
    for (const GroupWeight& g : weights) {
      scaled.assign(g.w->begin(), g.w->end());
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t j = 0; j < k; ++j) scaled[size_t(r * k + j)] *= s[size_t(j)];
      const std::vector<float> q = fake_quantize_rtn(scaled, g.rows, k, options);
      diff.resize(q.size());
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t j = 0; j < k; ++j) {
          const size_t i = size_t(r * k + j);
          diff[i] = (*g.w)[i] - q[i] / s[size_t(j)];
        }
      err += group_output_error(x, m, diff, g.rows, k);
    }
    if (err < best_err) {
      best_err = err;
      best = s;
      alpha = a;
    }
  }
  return best;
}

void awq_clip(std::vector<float>& w, int64_t rows, int64_t k, const std::vector<float>& x,
              int64_t m, const IntQuantOptions& options, int n_grid, float max_shrink) {
  if (m == 0) return;
  const int64_t group = options.group_size == -1 ? k : std::min(options.group_size, k);
  const int steps = std::max(1, int(float(n_grid) * max_shrink));
  std::vector<float> xg, diff, clipped(static_cast<size_t>(group)), deq(static_cast<size_t>(group)),
      y;
  std::vector<double> best_err(static_cast<size_t>(rows));
  std::vector<float> best_max(static_cast<size_t>(rows)), amax(static_cast<size_t>(rows));
  for (int64_t k0 = 0; k0 < k; k0 += group) {
    const int64_t g = std::min(group, k - k0);
    xg.resize(size_t(m * g));
    for (int64_t t = 0; t < m; ++t) std::copy_n(x.data() + t * k + k0, g, xg.data() + t * g);
    for (int64_t r = 0; r < rows; ++r) {
      float a = 0.0f;
      for (int64_t j = 0; j < g; ++j) a = std::max(a, std::fabs(w[size_t(r * k + k0 + j)]));
      amax[size_t(r)] = a;
      best_err[size_t(r)] = std::numeric_limits<double>::infinity();
      best_max[size_t(r)] = a;
    }
    diff.resize(size_t(rows * g));
    y.resize(size_t(m * rows));
    for (int step = 0; step < steps; ++step) {
      const float shrink = 1.0f - float(step) / float(n_grid);
      for (int64_t r = 0; r < rows; ++r) {
        const float mx = amax[size_t(r)] * shrink;
        const float* src = w.data() + r * k + k0;
        for (int64_t j = 0; j < g; ++j) clipped[size_t(j)] = std::clamp(src[j], -mx, mx);
        fake_quantize_group(clipped.data(), g, options, deq.data());
        for (int64_t j = 0; j < g; ++j) diff[size_t(r * g + j)] = src[j] - deq[size_t(j)];
      }
      const cpu::DenseMatrix d(cpu::WeightType::F32, rows, g, diff);
      cpu::linear(d, nullptr, xg.data(), m, y.data());
      for (int64_t r = 0; r < rows; ++r) {
        double e = 0.0;
        for (int64_t t = 0; t < m; ++t)
          e += double(y[size_t(t * rows + r)]) * y[size_t(t * rows + r)];
        if (e < best_err[size_t(r)]) {
          best_err[size_t(r)] = e;
          best_max[size_t(r)] = amax[size_t(r)] * shrink;
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = w.data() + r * k + k0;
      for (int64_t j = 0; j < g; ++j)
        dst[j] = std::clamp(dst[j], -best_max[size_t(r)], best_max[size_t(r)]);
    }
  }
}

}  // namespace nibble::quantize
