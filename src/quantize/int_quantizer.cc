#include "quantize/int_quantizer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/numeric.h"
#include "core/thread_pool.h"
#include "quant/formats/int_codes.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"
#include "quantize/blocked_linear_algebra.h"
#include "quantize/calibration_kernels.h"
#include "quantize/vector_ops.h"

namespace nibble::quantize {
namespace {

using quant::QuantizedTensor;

// Columns per sub-block of a lazy-batch block (see quantize_int_gptq).
constexpr int64_t kGptqSubBlock = 16;

struct Grid {
  int32_t maxq = 15;
  int32_t mid = 8;
};

Grid grid_of(const IntQuantOptions& o) {
  NIBBLE_CHECK(o.bits == 2 || o.bits == 3 || o.bits == 4 || o.bits == 8,
               "quantize: bits={} (expected 2, 3, 4 or 8)", o.bits);
  return {(1 << o.bits) - 1, 1 << (o.bits - 1)};
}

int64_t effective_group(const IntQuantOptions& o, int64_t cols) {
  NIBBLE_CHECK(o.group_size == -1 || o.group_size > 0,
               "quantize: group size {} (expected -1 or > 0)", o.group_size);
  return o.group_size == -1 ? cols : std::min(o.group_size, cols);
}

// The smallest positive value each scale dtype holds: a group of zeros or denormal-tiny weights
// must not get a zero scale (the division below would give NaN codes).
float smallest_scale(quant::ScaleDType dtype) {
  switch (dtype) {
    case quant::ScaleDType::F16: return 6.103515625e-05f;  // smallest normal f16
    case quant::ScaleDType::BF16:
    case quant::ScaleDType::F32:
    default: return 1.1754944e-38f;
  }
}

// Scale and zero of one row of one group from its values v[0..count) (stride apart).
void find_params(const double* v, int64_t count, int64_t stride, const IntQuantOptions& o,
                 const Grid& grid, float& scale, int32_t& zero) {
  double lo = 0.0, hi = 0.0;
  for (int64_t c = 0; c < count; ++c) {
    lo = std::min(lo, v[c * stride]);
    hi = std::max(hi, v[c * stride]);
  }
  if (o.symmetric) {
    double amax = std::max(-lo, hi);
    if (amax == 0.0) amax = 1.0;
    scale = round_scale(float(2.0 * amax / grid.maxq), o.scale_dtype);
    scale = std::max(scale, smallest_scale(o.scale_dtype));
    zero = grid.mid;
    return;
  }
  if (lo == 0.0 && hi == 0.0) lo = -1.0, hi = 1.0;
  scale = round_scale(float((hi - lo) / grid.maxq), o.scale_dtype);
  scale = std::max(scale, smallest_scale(o.scale_dtype));
  zero = std::clamp(int32_t(std::nearbyint(-lo / double(scale))), o.min_zero, grid.maxq);
}

inline int32_t quantize_value(double w, float scale, int32_t zero, int32_t maxq) {
  return std::clamp(int32_t(std::nearbyint(w / double(scale))) + zero, 0, maxq);
}

QuantizedTensor make_tensor(int64_t rows, int64_t cols, int64_t group, const IntQuantOptions& o,
                            const std::vector<int32_t>& codes_nk, const std::vector<float>& scales,
                            const std::vector<int32_t>& zeros, std::vector<int32_t> g_idx) {
  return quant::int_tensor_from_codes(rows, cols, group, o.bits, o.scale_dtype, codes_nk, scales,
                                      zeros, std::move(g_idx));
}

void check_shape(std::span<const float> w, int64_t rows, int64_t cols, const char* what) {
  NIBBLE_CHECK(rows > 0 && cols > 0 && int64_t(w.size()) == rows * cols,
               "{}: {} values for a [{}, {}] weight", what, w.size(), rows, cols);
}

}  // namespace

float round_scale(float v, quant::ScaleDType dtype) {
  switch (dtype) {
    case quant::ScaleDType::F16: return f16_to_f32(f32_to_f16(v));
    case quant::ScaleDType::BF16: return bf16_to_f32(f32_to_bf16(v));
    case quant::ScaleDType::F32: return v;
    default: fail("quantize: integer scales are stored as f32, f16 or bf16");
  }
}

QuantizedTensor quantize_int_rtn(std::span<const float> w, int64_t rows, int64_t cols,
                                 const IntQuantOptions& options) {
  check_shape(w, rows, cols, "quantize_int_rtn");
  const Grid grid = grid_of(options);
  const int64_t group = effective_group(options, cols);
  const int64_t n_groups = (cols + group - 1) / group;
  std::vector<int32_t> codes(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows * n_groups));
  std::vector<int32_t> zeros(static_cast<size_t>(rows * n_groups));
  std::vector<double> row(static_cast<size_t>(cols));
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t k = 0; k < cols; ++k) row[size_t(k)] = w[size_t(n * cols + k)];
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t k0 = g * group, k1 = std::min(cols, k0 + group);
      float& s = scales[size_t(n * n_groups + g)];
      int32_t& z = zeros[size_t(n * n_groups + g)];
      find_params(row.data() + k0, k1 - k0, 1, options, grid, s, z);
      for (int64_t k = k0; k < k1; ++k)
        codes[size_t(n * cols + k)] = quantize_value(row[size_t(k)], s, z, grid.maxq);
    }
  }
  return make_tensor(rows, cols, group, options, codes, scales, zeros, {});
}

GptqHessian prepare_gptq_hessian(std::span<const double> h, int64_t cols, const GptqOptions& gptq) {
  const int64_t K = cols;
  NIBBLE_CHECK(int64_t(h.size()) == K * K, "quantize_int_gptq: Hessian of {} values for K={}",
               h.size(), K);
  NIBBLE_CHECK(gptq.block_size > 0 && gptq.damp_percent >= 0.0,
               "quantize_int_gptq: block size {} and damp {}", gptq.block_size, gptq.damp_percent);
  GptqHessian prepared;
  prepared.cols = K;
  prepared.perm.resize(static_cast<size_t>(K));
  std::iota(prepared.perm.begin(), prepared.perm.end(), 0);
  if (gptq.act_order) {
    std::stable_sort(prepared.perm.begin(), prepared.perm.end(), [&](int64_t a, int64_t b) {
      return h[size_t(a * K + a)] > h[size_t(b * K + b)];
    });
  }
  const std::vector<int64_t>& perm = prepared.perm;
  prepared.dead.assign(static_cast<size_t>(K), 0);
  std::vector<double> hp(static_cast<size_t>(K * K));
  for (int64_t i = 0; i < K; ++i) {
    const int64_t k = perm[size_t(i)];
    prepared.dead[size_t(k)] = h[size_t(k * K + k)] == 0.0;
    for (int64_t j = 0; j < K; ++j) hp[size_t(i * K + j)] = h[size_t(k * K + perm[size_t(j)])];
    if (prepared.dead[size_t(k)]) hp[size_t(i * K + i)] = 1.0;
  }
  double mean_diag = 0.0;
  for (int64_t i = 0; i < K; ++i) mean_diag += hp[size_t(i * K + i)];
  mean_diag /= double(K);
  // A rank-deficient H (fewer calibration tokens than K, or duplicated inputs) can still fail
  // at 1% dampening; more dampening is what the reference implementations advise.
  double damp = gptq.damp_percent;
  for (int attempt = 0;; ++attempt) {
    std::vector<double> hd = hp;
    for (int64_t i = 0; i < K; ++i) hd[size_t(i * K + i)] += damp * mean_diag;
    if (inverse_upper_cholesky_auto(hd, K, prepared.u)) break;
    NIBBLE_CHECK(attempt < 6, "quantize_int_gptq: Hessian not positive definite even with damp {}",
                 damp);
    damp = damp == 0.0 ? 0.01 : damp * 4.0;
  }
  return prepared;
}

QuantizedTensor quantize_int_gptq(std::span<const float> w, int64_t rows, int64_t cols,
                                  std::span<const double> h, const IntQuantOptions& options,
                                  const GptqOptions& gptq) {
  return quantize_int_gptq(w, rows, cols, prepare_gptq_hessian(h, cols, gptq), options, gptq);
}

QuantizedTensor quantize_int_gptq(std::span<const float> w, int64_t rows, int64_t cols,
                                  const GptqHessian& prepared, const IntQuantOptions& options,
                                  const GptqOptions& gptq) {
  check_shape(w, rows, cols, "quantize_int_gptq");
  NIBBLE_CHECK(prepared.cols == cols, "quantize_int_gptq: Hessian for K={} used with K={}",
               prepared.cols, cols);
  const Grid grid = grid_of(options);
  const int64_t K = cols, N = rows;
  const int64_t group = effective_group(options, cols);
  const bool grouped = options.group_size != -1;
  const int64_t n_groups = (K + group - 1) / group;
  const std::vector<int64_t>& perm = prepared.perm;
  const std::vector<double>& u = prepared.u;
  // Wt[i][n]: column perm[i] of W, so each column is a contiguous row.
  std::vector<double> wt(static_cast<size_t>(K * N));
  for (int64_t i = 0; i < K; ++i) {
    const int64_t k = perm[size_t(i)];
    const bool dead = prepared.dead[size_t(k)] != 0;
    for (int64_t n = 0; n < N; ++n) wt[size_t(i * N + n)] = dead ? 0.0 : w[size_t(n * K + k)];
  }

  std::vector<float> scales(static_cast<size_t>(N * n_groups));
  std::vector<int32_t> zeros(static_cast<size_t>(N * n_groups));
  std::vector<float> col_scale(static_cast<size_t>(N));
  std::vector<int32_t> col_zero(static_cast<size_t>(N));
  // Static groups and per-channel: parameters from the (dead-zeroed) weights before any update.
  if (gptq.static_groups || !grouped) {
    std::vector<double> natural(static_cast<size_t>(K * N));
    for (int64_t i = 0; i < K; ++i)
      std::copy_n(wt.data() + i * N, N, natural.data() + perm[size_t(i)] * N);
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t k0 = g * group, k1 = std::min(K, k0 + group);
      for (int64_t n = 0; n < N; ++n)
        find_params(natural.data() + k0 * N + n, k1 - k0, N, options, grid,
                    scales[size_t(n * n_groups + g)], zeros[size_t(n * n_groups + g)]);
    }
  }

  std::vector<int32_t> codes(static_cast<size_t>(N * K));  // [N, K] in original column order
  std::vector<int32_t> g_idx(static_cast<size_t>(K), 0);
  const int64_t B = gptq.block_size;
  std::vector<double> err(static_cast<size_t>(B * N));
  ThreadPool& pool = ThreadPool::global();
  for (int64_t i1 = 0; i1 < K; i1 += B) {
    const int64_t i2 = std::min(K, i1 + B);
    // Inside the block, columns go in sub-blocks: a column's error reaches the rest of its
    // sub-block at once (axpys), the rest of the block after the sub-block (one small GEMM).
    // Every weight still receives its updates one at a time in column order, so the result is
    // the same as column-by-column updates.
    for (int64_t s1 = i1, s2 = i1; s1 < i2; s1 = s2) {
      s2 = std::min(i2, s1 + kGptqSubBlock);
      // A group's parameters come from its columns with every earlier column's update applied
      // inside this block (as with column-by-column updates): a group starts a sub-block.
      if (grouped && !gptq.static_groups) s2 = std::min(s2, (s1 / group + 1) * group);
      for (int64_t i = s1; i < s2; ++i) {
        const int64_t k = perm[size_t(i)];
        int64_t g = 0;
        if (grouped) g = gptq.static_groups ? k / group : i / group;
        if (grouped && !gptq.static_groups && i % group == 0) {
          const int64_t count = std::min(group, K - i);
          for (int64_t n = 0; n < N; ++n)
            find_params(wt.data() + i * N + n, count, N, options, grid,
                        scales[size_t(n * n_groups + g)], zeros[size_t(n * n_groups + g)]);
        }
        g_idx[size_t(k)] = int32_t(g);
        const double d = u[size_t(i * K + i)];
        double* wi = wt.data() + i * N;
        double* ei = err.data() + (i - i1) * N;
        for (int64_t n = 0; n < N; ++n) {
          const float s = scales[size_t(n * n_groups + g)];
          const int32_t z = zeros[size_t(n * n_groups + g)];
          const int32_t q = quantize_value(wi[n], s, z, grid.maxq);
          codes[size_t(n * K + k)] = q;
          const double deq = double(s) * double(q - z);
          ei[n] = (wi[n] - deq) / d;
        }
        const double* ui = u.data() + i * K;
        for (int64_t j = i + 1; j < s2; ++j) sub_scaled(wt.data() + j * N, ei, ui[j], N);
      }
      subtract_product(wt.data() + s2 * N, N, u.data() + s1 * K + s2, K, err.data() + (s1 - i1) * N,
                       N, i2 - s2, N, s2 - s1);
    }
    // The block's errors reach the later columns in one GEMM (GPTQ's lazy batch update), its
    // rows split over the pool.
    const int64_t rest = K - i2;
    pool.parallel_for(rest, 16, [&](int64_t begin, int64_t end) {
      subtract_product(wt.data() + (i2 + begin) * N, N, u.data() + i1 * K + i2 + begin, K,
                       err.data(), N, end - begin, N, i2 - i1);
    });
  }
  if (!grouped) g_idx.clear();
  return make_tensor(N, K, group, options, codes, scales, zeros, std::move(g_idx));
}

void fake_quantize_group(const float* v, int64_t count, const IntQuantOptions& options,
                         float* out) {
  const Grid grid = grid_of(options);
  thread_local std::vector<double> values;
  values.assign(v, v + count);
  float s;
  int32_t z;
  find_params(values.data(), count, 1, options, grid, s, z);
  for (int64_t i = 0; i < count; ++i)
    out[i] = s * float(quantize_value(values[size_t(i)], s, z, grid.maxq) - z);
}

std::vector<float> fake_quantize_rtn(std::span<const float> w, int64_t rows, int64_t cols,
                                     const IntQuantOptions& options) {
  check_shape(w, rows, cols, "fake_quantize_rtn");
  const int64_t group = effective_group(options, cols);
  std::vector<float> out(w.size());
  ThreadPool::global().parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t k0 = 0; k0 < cols; k0 += group)
        fake_quantize_group(w.data() + n * cols + k0, std::min(group, cols - k0), options,
                            out.data() + n * cols + k0);
  });
  return out;
}

double output_error(std::span<const float> w, std::span<const float> w_hat, int64_t rows,
                    int64_t cols, std::span<const float> x, int64_t m) {
  NIBBLE_CHECK(
      w.size() == w_hat.size() && int64_t(w.size()) == rows * cols && int64_t(x.size()) == m * cols,
      "output_error: shapes disagree");
  std::vector<float> diff(w.size());
  for (size_t i = 0; i < w.size(); ++i) diff[i] = w[i] - w_hat[i];
  const cpu::DenseMatrix d(cpu::WeightType::F32, rows, cols, diff);
  std::vector<float> y(static_cast<size_t>(m * rows));
  cpu::linear(d, nullptr, x.data(), m, y.data());
  double total = 0.0;
  for (float v : y) total += double(v) * double(v);
  return total / double(std::max<int64_t>(m, 1));
}

}  // namespace nibble::quantize
