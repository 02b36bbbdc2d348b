// Offline quantization math (src/quantize): the double-precision Cholesky pieces against naive
// references, the calibration Hessian against a direct sum, RTN's grid, and GPTQ against RTN on
// the same calibration inputs (GPTQ must add less output error), on fresh random inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <random>
#include <vector>

#include "quant/reference/dequantize.h"
#include "quant/types.h"
#include "quantize/activation_scaling.h"
#include "quantize/blocked_linear_algebra.h"
#include "quantize/input_statistics.h"
#include "quantize/int_quantizer.h"
#include "quantize/linear_algebra.h"

namespace nibble::quantize {
namespace {

std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng());
  return v;
}

// Inputs with correlated channels and a few outlier channels, as real activations have: the
// case where GPTQ's error feedback pays off.
std::vector<float> correlated_inputs(int64_t m, int64_t k) {
  const int64_t rank = std::max<int64_t>(4, k / 4);
  const std::vector<float> basis = randn(size_t(rank * k));
  std::vector<float> x(size_t(m * k));
  std::vector<float> channel_scale = randn(size_t(k), 0.3f);
  for (float& c : channel_scale) c = std::exp(c);
  channel_scale[0] *= 8.0f;
  for (int64_t t = 0; t < m; ++t) {
    const std::vector<float> c = randn(size_t(rank));
    const std::vector<float> noise = randn(size_t(k), 0.1f);
    for (int64_t j = 0; j < k; ++j) {
      float v = noise[size_t(j)];
      for (int64_t r = 0; r < rank; ++r) v += c[size_t(r)] * basis[size_t(r * k + j)];
      x[size_t(t * k + j)] = v * channel_scale[size_t(j)];
    }
  }
  return x;
}

std::vector<double> naive_hessian(const std::vector<float>& x, int64_t m, int64_t k) {
  std::vector<double> h(size_t(k * k), 0.0);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        h[size_t(i * k + j)] += double(x[size_t(t * k + i)]) * double(x[size_t(t * k + j)]);
  for (double& v : h) v *= 2.0 / double(m);
  return h;
}

// Inverse by Gauss-Jordan elimination with partial pivoting: the reference for the Cholesky path.
std::vector<double> naive_inverse(std::vector<double> a, int64_t n) {
  std::vector<double> inv(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[size_t(i * n + i)] = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    int64_t p = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(a[size_t(r * n + c)]) > std::fabs(a[size_t(p * n + c)])) p = r;
    for (int64_t j = 0; j < n; ++j) {
      std::swap(a[size_t(c * n + j)], a[size_t(p * n + j)]);
      std::swap(inv[size_t(c * n + j)], inv[size_t(p * n + j)]);
    }
    const double d = a[size_t(c * n + c)];
    for (int64_t j = 0; j < n; ++j) {
      a[size_t(c * n + j)] /= d;
      inv[size_t(c * n + j)] /= d;
    }
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[size_t(r * n + c)];
      for (int64_t j = 0; j < n; ++j) {
        a[size_t(r * n + j)] -= f * a[size_t(c * n + j)];
        inv[size_t(r * n + j)] -= f * inv[size_t(c * n + j)];
      }
    }
  }
  return inv;
}

TEST(QuantizeLinearAlgebra, InverseUpperCholeskyMatchesNaiveInverse) {
  const int64_t n = 70, m = 300;
  const std::vector<float> x = randn(size_t(m * n));
  std::vector<double> h = naive_hessian(x, m, n);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += 0.01;
  std::vector<double> u;
  ASSERT_TRUE(inverse_upper_cholesky(h, n, u));
  const std::vector<double> inv = naive_inverse(h, n);
  double max_inv = 0.0;
  for (double v : inv) max_inv = std::max(max_inv, std::fabs(v));
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(u[size_t(i * n + i)], 0.0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u[size_t(i * n + j)], 0.0) << i << "," << j;
  }
  // UᵀU = H⁻¹ to double rounding amplified by cond(H) (≤ ~1e3 for these inputs): 1e-9 relative.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t r = 0; r < n; ++r) s += u[size_t(r * n + i)] * u[size_t(r * n + j)];
      EXPECT_NEAR(s, inv[size_t(i * n + j)], 1e-9 * max_inv) << i << "," << j;
    }
}

// The blocked factorisation and inverse (GEMM trailing updates over the pool) against the serial
// code, on blocks that do not divide n: the same numbers up to double rounding of different
// summation orders (1e-12 of the largest entry; cond(H) ≤ ~1e3 amplifies the inverse's).
TEST(QuantizeLinearAlgebra, BlockedMatchesSerial) {
  const int64_t n = 301, m = 700;
  const std::vector<float> x = randn(size_t(m * n));
  std::vector<double> h = naive_hessian(x, m, n);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += 0.01;
  for (const int64_t block : {int64_t(64), int64_t(7), n}) {
    std::vector<double> serial = h, blocked = h;
    ASSERT_TRUE(cholesky_lower_inplace(serial, n));
    ASSERT_TRUE(cholesky_lower_blocked(blocked, n, block));
    double max_l = 0.0, max_diff = 0.0;
    for (size_t i = 0; i < serial.size(); ++i) {
      max_l = std::max(max_l, std::fabs(serial[i]));
      max_diff = std::max(max_diff, std::fabs(serial[i] - blocked[i]));
    }
    EXPECT_LE(max_diff, 1e-12 * max_l) << "Cholesky, block " << block;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) ASSERT_EQ(blocked[size_t(i * n + j)], 0.0);
    invert_lower_inplace(serial, n);
    invert_lower_blocked(blocked, n, block);
    double max_x = 0.0;
    max_diff = 0.0;
    for (size_t i = 0; i < serial.size(); ++i) {
      max_x = std::max(max_x, std::fabs(serial[i]));
      max_diff = std::max(max_diff, std::fabs(serial[i] - blocked[i]));
    }
    EXPECT_LE(max_diff, 1e-10 * max_x) << "inverse, block " << block;
  }
  std::vector<double> indefinite = {1.0, 2.0, 2.0, 1.0};
  EXPECT_FALSE(cholesky_lower_blocked(indefinite, 2, 1));
  // Below kBlockedFrom the automatic choice is the serial code, bit for bit.
  std::vector<double> u_serial, u_auto;
  ASSERT_TRUE(inverse_upper_cholesky(h, n, u_serial));
  ASSERT_TRUE(inverse_upper_cholesky_auto(h, n, u_auto));
  EXPECT_EQ(u_serial, u_auto);
}

TEST(QuantizeLinearAlgebra, CholeskyRefusesIndefinite) {
  std::vector<double> a = {1.0, 2.0, 2.0, 1.0};  // eigenvalues 3 and −1
  EXPECT_FALSE(cholesky_lower_inplace(a, 2));
}

TEST(QuantizeStatistics, HessianMatchesDirectSum) {
  const int64_t k = 96, m = 2500;  // spans several f32 chunks of 1024 rows
  const std::vector<float> x = randn(size_t(m * k));
  InputStatistics stats(k, true, 100, 8);
  stats.add(x.data(), 1000);
  stats.add(x.data() + 1000 * k, m - 1000);
  const std::vector<double> h = stats.hessian();
  const std::vector<double> ref = naive_hessian(x, m, k);
  // Each chunk sums ≤ 1024 f32 products (relative error ≲ 1024·2⁻²⁴ ≈ 6e-5 worst case, far less
  // in practice), totals in double: 1e-4 of the diagonal scale bounds every entry.
  for (size_t i = 0; i < h.size(); ++i) EXPECT_NEAR(h[i], ref[i], 1e-4 * 2.0) << i;
  EXPECT_EQ(stats.count(), m);
  EXPECT_EQ(stats.kept_count(), 8);
  double abs0 = 0.0;
  float max0 = 0.0f;
  for (int64_t t = 0; t < m; ++t) {
    abs0 += std::fabs(x[size_t(t * k)]);
    max0 = std::max(max0, std::fabs(x[size_t(t * k)]));
  }
  EXPECT_NEAR(stats.mean_abs()[0], abs0 / double(m), 1e-5);
  EXPECT_EQ(stats.max_abs()[0], max0);
}

TEST(QuantizeRtn, CodesAreNearestOnTheGrid) {
  const int64_t n = 16, k = 200;  // a partial last group of 72
  const std::vector<float> w = randn(size_t(n * k));
  for (bool sym : {true, false}) {
    IntQuantOptions o;
    o.bits = 4;
    o.group_size = 128;
    o.symmetric = sym;
    const quant::QuantizedTensor t = quantize_int_rtn(w, n, k, o);
    quant::validate(t, "rtn");
    EXPECT_EQ(t.scale_cols, 2);
    const std::vector<float> deq = quant::dequantize(t);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const float s = t.scales[size_t(r * t.scale_cols + c / 128)];
        // Inside the grid's range every value rounds to within half a step; the symmetric grid
        // clips +amax to 7·s (= amax − s/2), also within half a step (plus f32 rounding).
        EXPECT_LE(std::fabs(deq[size_t(r * k + c)] - w[size_t(r * k + c)]), 0.5f * s * 1.0001f)
            << "sym=" << sym << " " << r << "," << c;
      }
    if (sym) {
      EXPECT_EQ(t.elem, quant::ElemType::Int4);
    }
  }
}

double error_of(const quant::QuantizedTensor& t, const std::vector<float>& w,
                const std::vector<float>& x, int64_t m) {
  return output_error(w, quant::dequantize(t), t.rows, t.cols, x, m);
}

struct GptqCase {
  int bits;
  int64_t group;
  bool sym;
  bool act_order;
  bool static_groups;
};

// Without it gtest prints the struct's bytes, padding included, so the names that ctest
// registers would change from build to build.
void PrintTo(const GptqCase& c, std::ostream* os) {
  *os << "int" << c.bits << (c.group == -1 ? "_channel" : "_g" + std::to_string(c.group))
      << (c.sym ? "_sym" : "_asym") << (c.act_order ? "_actorder" : "")
      << (c.static_groups ? "_static" : "");
}

class QuantizeGptq : public ::testing::TestWithParam<GptqCase> {};

TEST_P(QuantizeGptq, LowerOutputErrorThanRtn) {
  const GptqCase c = GetParam();
  const int64_t n = 48, k = 256, m = 1024;
  const std::vector<float> w = randn(size_t(n * k), 0.05f);
  const std::vector<float> x = correlated_inputs(m, k);
  InputStatistics stats(k, true);
  stats.add(x.data(), m);
  IntQuantOptions o;
  o.bits = c.bits;
  o.group_size = c.group;
  o.symmetric = c.sym;
  o.scale_dtype = quant::ScaleDType::F16;
  GptqOptions g;
  g.act_order = c.act_order;
  g.static_groups = c.static_groups;
  const quant::QuantizedTensor rtn = quantize_int_rtn(w, n, k, o);
  const quant::QuantizedTensor gptq = quantize_int_gptq(w, n, k, stats.hessian(), o, g);
  quant::validate(gptq, "gptq");
  const double e_rtn = error_of(rtn, w, x, m), e_gptq = error_of(gptq, w, x, m);
  // On correlated inputs GPTQ's error feedback removes most of RTN's output error; demand a
  // clear margin (measured: 2-10x lower), not just "lower".
  EXPECT_LT(e_gptq, 0.8 * e_rtn) << "bits " << c.bits << " group " << c.group;
  EXPECT_EQ(!gptq.g_idx.empty(), c.act_order && !c.static_groups && c.group != -1);
  for (float s : gptq.scales) EXPECT_EQ(s, round_scale(s, quant::ScaleDType::F16));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, QuantizeGptq,
    ::testing::Values(GptqCase{4, 128, true, false, false}, GptqCase{4, 32, false, false, false},
                      GptqCase{4, 64, true, true, false}, GptqCase{4, 64, true, true, true},
                      GptqCase{4, -1, true, true, false}, GptqCase{3, 128, false, false, false},
                      GptqCase{2, 32, false, false, false}, GptqCase{8, -1, true, false, false}));

TEST(QuantizeGptq, DeadChannelsGetZeroWeight) {
  const int64_t n = 8, k = 64, m = 256;
  const std::vector<float> w = randn(size_t(n * k));
  std::vector<float> x = randn(size_t(m * k));
  for (int64_t t = 0; t < m; ++t) x[size_t(t * k + 5)] = 0.0f;
  InputStatistics stats(k, true);
  stats.add(x.data(), m);
  IntQuantOptions o;
  o.group_size = 32;
  const quant::QuantizedTensor q = quantize_int_gptq(w, n, k, stats.hessian(), o, GptqOptions{});
  const std::vector<float> deq = quant::dequantize(q);
  for (int64_t r = 0; r < n; ++r) EXPECT_EQ(deq[size_t(r * k + 5)], 0.0f);
}

TEST(QuantizeAsym, MinZeroKeepsGptqV1Legal) {
  const int64_t n = 16, k = 64;
  std::vector<float> w = randn(size_t(n * k));
  for (float& v : w) v = std::fabs(v);  // min = 0 → the natural zero point is 0
  IntQuantOptions o;
  o.symmetric = false;
  o.group_size = 32;
  o.min_zero = 1;
  const quant::QuantizedTensor t = quantize_int_rtn(w, n, k, o);
  for (int32_t z : t.int_zeros) EXPECT_GE(z, 1);
}

TEST(QuantizeSmoothQuant, ScalesPreserveTheProduct) {
  const int64_t n = 12, k = 40, m = 20;
  std::vector<float> w = randn(size_t(n * k));
  const std::vector<float> x = correlated_inputs(m, k);
  std::vector<float> act_max(size_t(k), 0.0f);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < k; ++j)
      act_max[size_t(j)] = std::max(act_max[size_t(j)], std::fabs(x[size_t(t * k + j)]));
  const std::vector<float> w0 = w;
  const std::vector<float> s = smoothquant_scales(act_max, {{&w, n}}, k, 0.5f);
  scale_weight_columns({{&w, n}}, k, s);
  // (x / s)·(W·s)ᵀ = x·Wᵀ up to f32 rounding of the two products (relative 1e-5).
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < n; ++r) {
      double a = 0.0, b = 0.0, mag = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        a += double(x[size_t(t * k + j)]) * w0[size_t(r * k + j)];
        b += double(x[size_t(t * k + j)] / s[size_t(j)]) * w[size_t(r * k + j)];
        mag += std::fabs(double(x[size_t(t * k + j)]) * w0[size_t(r * k + j)]);
      }
      EXPECT_NEAR(a, b, 1e-5 * mag);
    }
}

TEST(QuantizeAwq, SearchNeverWorseThanPlainRtn) {
  const int64_t n = 32, k = 128, m = 256;
  std::vector<float> w = randn(size_t(n * k), 0.05f);
  const std::vector<float> x = correlated_inputs(m, k);
  InputStatistics stats(k, false, 1, m);
  stats.add(x.data(), m);
  IntQuantOptions o;
  o.group_size = 32;
  float alpha = -1.0f;
  const std::vector<float> w0 = w;
  const std::vector<float> s =
      awq_search_scales(stats.kept_rows(), m, stats.mean_abs(), {{&w, n}}, k, o, 20, alpha);
  EXPECT_GE(alpha, 0.0f);
  // The search includes α = 0 (s = 1, plain RTN): its pick is never worse on its own inputs.
  const double e_rtn = output_error(w0, fake_quantize_rtn(w0, n, k, o), n, k, x, m);
  std::vector<float> scaled = w0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) scaled[size_t(r * k + j)] *= s[size_t(j)];
  std::vector<float> deq = fake_quantize_rtn(scaled, n, k, o);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) deq[size_t(r * k + j)] /= s[size_t(j)];
  EXPECT_LE(output_error(w0, deq, n, k, x, m), e_rtn * (1.0 + 1e-6));
  // Clipping likewise keeps the unclipped candidate.
  std::vector<float> clipped = w0;
  awq_clip(clipped, n, k, x, m, o);
  // Per (row, group) the search keeps the unclipped candidate; cross-group terms of the total
  // error are not part of its objective, so allow 5%.
  EXPECT_LE(output_error(w0, fake_quantize_rtn(clipped, n, k, o), n, k, x, m), e_rtn * 1.05);
}

}  // namespace
}  // namespace nibble::quantize
