// The dense kernels behind calibration and GPTQ (src/quantize/calibration_kernels.h) against
// their scalar references: the lower-triangle Gram update within its stated f32 bound of the
// double sums (and exactly symmetric), the GEMM form of GPTQ's update the same numbers as axpys,
// and GPTQ's codes must not depend on the lazy-batch width.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "quant/types.h"
#include "quantize/calibration_kernels.h"
#include "quantize/int_quantizer.h"

namespace nibble::quantize {
namespace {

std::vector<float> randn_f32(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<double> randn_f64(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

TEST(QuantizeKernels, GramMatchesReferenceWithinChunkBound) {
  // Shapes around the 6 × 16 register tile, the 256-row chunks and k not a multiple of either.
  for (const auto& [m, k] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 7}, {100, 37}, {2500, 96}, {1100, 130}, {300, 200}, {513, 576}}) {
    const std::vector<float> x = randn_f32(size_t(m * k), uint64_t(m * 1000 + k));
    std::vector<double> h(size_t(k * k), 0.0), ref(size_t(k * k), 0.0);
    accumulate_gram(x.data(), m, k, h.data());
    accumulate_gram_reference(x.data(), m, k, ref.data());
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const size_t e = size_t(i * k + j);
        ASSERT_EQ(h[e], h[size_t(j * k + i)]);
        // f32 sums of ≤ 256 fused products per chunk: γ₂₅₆ = 256·2⁻²⁴ of Σ|products|.
        double magnitude = 0.0;
        for (int64_t t = 0; t < m; ++t)
          magnitude += std::fabs(double(x[size_t(t * k + i)]) * x[size_t(t * k + j)]);
        ASSERT_LE(std::fabs(h[e] - ref[e]), 256.0 * std::ldexp(1.0, -24) * magnitude + 1e-12)
            << "m=" << m << " k=" << k << " (" << i << ", " << j << ")";
      }
  }
}

TEST(QuantizeKernels, GramAccumulates) {
  const int64_t m = 700, k = 50;
  const std::vector<float> x = randn_f32(size_t(m * k), 3);
  std::vector<double> once(size_t(k * k), 0.0), twice(size_t(k * k), 0.0);
  accumulate_gram(x.data(), m, k, once.data());
  accumulate_gram(x.data(), 300, k, twice.data());
  accumulate_gram(x.data() + 300 * k, m - 300, k, twice.data());
  for (size_t e = 0; e < once.size(); ++e) EXPECT_NEAR(once[e], twice[e], 1e-3) << e;
}

TEST(QuantizeKernels, SubtractProductMatchesReference) {
  // Shapes around the 4 × 12 tile and the 48-column blocks, with strides wider than the data.
  for (const auto& [rows, cols, depth] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {4, 12, 16}, {7, 50, 3}, {33, 97, 128}, {130, 576, 16}}) {
    const int64_t ldc = cols + 3, lda = rows + 5, ldb = cols + 1;
    const std::vector<double> c0 = randn_f64(size_t(rows * ldc), 1);
    const std::vector<double> at = randn_f64(size_t(depth * lda), 2);
    const std::vector<double> b = randn_f64(size_t(depth * ldb), 3);
    std::vector<double> fast = c0, ref = c0;
    subtract_product(fast.data(), ldc, at.data(), lda, b.data(), ldb, rows, cols, depth);
    subtract_product_reference(ref.data(), ldc, at.data(), lda, b.data(), ldb, rows, cols, depth);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < ldc; ++n) {
        const size_t e = size_t(r * ldc + n);
        if (n >= cols) {
          ASSERT_EQ(fast[e], c0[e]) << "wrote past the columns";
          continue;
        }
        // Fused vs separate rounding of each of ≤ 128 products: ≲ 1e-13 of the magnitudes.
        ASSERT_NEAR(fast[e], ref[e], 1e-12 * double(depth)) << rows << "x" << cols << "x" << depth;
      }
  }
}

TEST(QuantizeKernels, GptqCodesDoNotDependOnBlockWidth) {
  const int64_t n = 24, k = 200, m = 600;
  const std::vector<float> x = randn_f32(size_t(m * k), 11);
  std::vector<double> h(size_t(k * k), 0.0);
  accumulate_gram(x.data(), m, k, h.data());
  for (double& v : h) v *= 2.0 / double(m);
  const std::vector<float> w = randn_f32(size_t(n * k), 12);
  // A group's parameters see the updates of the earlier columns of its lazy-batch block, not
  // of columns in later blocks, so (as in the reference GPTQ) only block widths that are
  // multiples of the group give the same result; per channel, any width does. Group 24 is not a
  // multiple of the 16-column sub-blocks, so groups must start sub-blocks of their own.
  for (const auto& [group, widths] : std::vector<std::pair<int64_t, std::vector<int64_t>>>{
           {-1, {1, 7, 16, 50, 200}}, {24, {24, 48, 120}}, {64, {64, 128, 192}}}) {
    IntQuantOptions io;
    io.bits = 4;
    io.group_size = group;
    GptqOptions go;
    go.block_size = widths.front();
    const quant::QuantizedTensor base = quantize_int_gptq(w, n, k, h, io, go);
    for (int64_t width : widths) {
      go.block_size = width;
      const quant::QuantizedTensor q = quantize_int_gptq(w, n, k, h, io, go);
      // Each weight receives the same updates in the same order whatever the blocking; only
      // fused vs separate rounding of the multiply-subtracts differs (≈ 1e-16), which flips no
      // code here.
      EXPECT_EQ(q.codes, base.codes) << "group " << group << " width " << width;
      EXPECT_EQ(q.scales, base.scales) << "group " << group << " width " << width;
    }
  }
}

}  // namespace
}  // namespace nibble::quantize
