// The calibration forward's packed GEMM (src/quantize/calibration_gemm.h) against its double
// reference, on shapes around its 4 × 24 register tile and 64-row blocks, with strides wider
// than the data, a bias, and the SmolLM2 shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "quantize/calibration_gemm.h"

namespace nibble::quantize {
namespace {

std::vector<float> uniform(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(CalibrationGemm, MatchesReferenceWithinChainBound) {
  for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {3, 23, 5}, {4, 24, 64}, {67, 49, 130}, {130, 192, 576}, {64, 100, 1536}}) {
    const int64_t ldx = k + 3, ldy = n + 5;
    const std::vector<float> x = uniform(size_t(m * ldx), uint64_t(m * 7 + k));
    const std::vector<float> w = uniform(size_t(n * k), uint64_t(n * 11 + k));
    const std::vector<float> bias = uniform(size_t(n), 5);
    for (const bool with_bias : {false, true}) {
      const float* b = with_bias ? bias.data() : nullptr;
      std::vector<float> fast(size_t(m * ldy), 7.0f), ref(size_t(m * ldy), 7.0f);
      calibration_linear(w.data(), n, k, b, x.data(), ldx, m, fast.data(), ldy);
      calibration_linear_reference(w.data(), n, k, b, x.data(), ldx, m, ref.data(), ldy);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < ldy; ++c) {
          const size_t e = size_t(r * ldy + c);
          if (c >= n) {
            ASSERT_EQ(fast[e], 7.0f) << "wrote past the outputs";
            continue;
          }
          // One f32 FMA chain over K, then the bias: (K + 1)·2⁻²⁴ of Σ|products| + |bias|,
          // plus the reference's own rounding to f32.
          double magnitude = with_bias ? std::fabs(double(bias[size_t(c)])) : 0.0;
          for (int64_t d = 0; d < k; ++d)
            magnitude += std::fabs(double(x[size_t(r * ldx + d)]) * w[size_t(c * k + d)]);
          const double bound = double(k + 2) * std::ldexp(1.0, -24) * magnitude;
          ASSERT_LE(std::fabs(double(fast[e]) - double(ref[e])), bound)
              << m << "x" << n << "x" << k << " (" << r << ", " << c << ")";
        }
    }
  }
}

}  // namespace
}  // namespace nibble::quantize
