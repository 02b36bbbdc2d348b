// Every CPU kernel on every ISA this machine runs, against the scalar reference (which
// accumulates in double) on fresh random inputs, with error bounds derived from f32/bf16
// rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/reference.h"
#include "core/numeric.h"

namespace nibble::cpu {
namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);  // f32

std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}());
  return gen;
}

std::vector<float> random_vector(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng());
  return v;
}

std::vector<const KernelTable*> simd_tables() {
  std::vector<const KernelTable*> tables;
  for (const std::string& name : available_isas()) {
    if (name != "scalar") tables.push_back(kernels_for_isa(name));
  }
  return tables;
}

TEST(CpuKernelsDispatch, ChoosesAnAvailableIsa) {
  const auto isas = available_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), "scalar");
  EXPECT_NE(std::find(isas.begin(), isas.end(), std::string(isa_name())), isas.end());
  EXPECT_EQ(kernels_for_isa("no-such-isa"), nullptr);
  for (const auto& name : isas) {
    ASSERT_NE(kernels_for_isa(name), nullptr) << name;
    EXPECT_EQ(std::string(kernels_for_isa(name)->name), name);
  }
  if (simd_tables().empty()) GTEST_SKIP() << "no SIMD ISA on this CPU: only the reference ran";
}

struct MatmulCase {
  int64_t m, k, n;
};

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (int64_t m = 1; m <= 17; ++m) cases.push_back({m, 576, 25});
  for (int64_t k : {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100}) {
    for (int64_t n : {1, 2, 5, 7, 24, 50}) cases.push_back({(k + n) % 9 + 1, k, n});
  }
  cases.push_back({33, 130, 77});
  return cases;
}

// Compares `fn` over the columns [n_begin, n) against the reference; columns outside the range
// must stay untouched.
void check_matmul(const KernelTable& table, bool bf16, const MatmulCase& c, int64_t n_begin) {
  std::vector<float> x = random_vector(size_t(c.m * c.k));
  std::vector<float> w = random_vector(size_t(c.n * c.k));
  std::vector<float> bias = random_vector(size_t(c.n));
  std::vector<uint16_t> w_bf16(w.size()), x_bf16(x.size());
  if (bf16) {
    for (size_t i = 0; i < w.size(); ++i) {
      w_bf16[i] = f32_to_bf16(w[i]);
      w[i] = bf16_to_f32(w_bf16[i]);
    }
    for (size_t i = 0; i < x.size(); ++i) {
      x_bf16[i] = f32_to_bf16(x[i]);
      x[i] = bf16_to_f32(x_bf16[i]);
    }
  }
  MatmulArgs args;
  args.x = x.data();
  args.x_bf16 = x_bf16.data();
  args.ldx = c.k;
  args.m_rows = c.m;
  args.k = c.k;
  args.w = bf16 ? static_cast<const void*>(w_bf16.data()) : static_cast<const void*>(w.data());
  args.ldw = c.k;
  args.bias = (c.k % 2) ? bias.data() : nullptr;
  const float sentinel = 12345.0f;
  std::vector<float> y(static_cast<size_t>(c.m * c.n), sentinel), ref(y.size(), sentinel);
  args.y = y.data();
  args.ldy = c.n;
  (bf16 ? table.matmul_bf16 : table.matmul_f32)(args, n_begin, c.n);
  args.y = ref.data();
  (bf16 ? reference_kernels().matmul_bf16 : reference_kernels().matmul_f32)(args, n_begin, c.n);

  // Each lane of the kernel sums about k/8 terms in sequence, then lanes are added in a tree;
  // vdpbf16ps rounds twice per pair: (k/8 + 8) roundings bound the error relative to sum |x w|.
  const double roundings = double(c.k) / 8.0 + 8.0;
  for (int64_t m = 0; m < c.m; ++m) {
    for (int64_t n = 0; n < c.n; ++n) {
      const float got = y[size_t(m * c.n + n)], want = ref[size_t(m * c.n + n)];
      if (n < n_begin) {
        EXPECT_EQ(got, sentinel);
        continue;
      }
      double abs_sum = args.bias ? std::fabs(bias[size_t(n)]) : 0.0;
      for (int64_t k = 0; k < c.k; ++k)
        abs_sum += std::fabs(double(x[size_t(m * c.k + k)]) * w[size_t(n * c.k + k)]);
      const double bound = roundings * kUnitRoundoff * abs_sum * 1.01 + 1e-30;
      ASSERT_LE(std::fabs(double(got) - want), bound)
          << table.name << (bf16 ? " bf16" : " f32") << " m=" << c.m << " k=" << c.k << " n=" << c.n
          << " at (" << m << "," << n << ")";
    }
  }
}

TEST(CpuKernelsMatmul, F32MatchesReference) {
  for (const KernelTable* t : simd_tables()) {
    for (const MatmulCase& c : matmul_cases()) {
      check_matmul(*t, false, c, 0);
      if (c.n > 3) check_matmul(*t, false, c, 3);
    }
  }
}

TEST(CpuKernelsMatmul, Bf16MatchesReference) {
  for (const KernelTable* t : simd_tables()) {
    for (const MatmulCase& c : matmul_cases()) {
      check_matmul(*t, true, c, 0);
      if (c.n > 3) check_matmul(*t, true, c, 3);
    }
  }
}

TEST(CpuKernelsMatmul, ResultsDoNotDependOnBatchRows) {
  // Decode (1 row) and prefill (many rows) must give identical outputs for the same row.
  for (const KernelTable* t : simd_tables()) {
    for (bool bf16 : {false, true}) {
      const int64_t m = 13, k = 577, n = 29;
      std::vector<float> x = random_vector(size_t(m * k)), w = random_vector(size_t(n * k));
      std::vector<uint16_t> xb(x.size()), wb(w.size());
      t->f32_to_bf16(x.data(), int64_t(x.size()), xb.data(), x.data());
      t->f32_to_bf16(w.data(), int64_t(w.size()), wb.data(), nullptr);
      MatmulArgs args;
      args.x = x.data();
      args.x_bf16 = xb.data();
      args.ldx = k;
      args.k = k;
      args.w = bf16 ? static_cast<const void*>(wb.data()) : static_cast<const void*>(w.data());
      args.ldw = k;
      args.ldy = n;
      std::vector<float> all(static_cast<size_t>(m * n)), one(static_cast<size_t>(n));
      args.m_rows = m;
      args.y = all.data();
      (bf16 ? t->matmul_bf16 : t->matmul_f32)(args, 0, n);
      for (int64_t r = 0; r < m; ++r) {
        MatmulArgs row = args;
        row.m_rows = 1;
        row.x = x.data() + r * k;
        row.x_bf16 = xb.data() + r * k;
        row.y = one.data();
        (bf16 ? t->matmul_bf16 : t->matmul_f32)(row, 0, n);
        for (int64_t c = 0; c < n; ++c)
          ASSERT_EQ(one[size_t(c)], all[size_t(r * n + c)]) << t->name;
      }
    }
  }
}

TEST(CpuKernelsMatmul, Bf16IsWithinRoundingOfExactF32) {
  // Rounding x and w to bf16 changes each product by at most 2^-8 relative.
  const int64_t m = 3, k = 300, n = 40;
  std::vector<float> x = random_vector(size_t(m * k)), w = random_vector(size_t(n * k));
  DenseMatrix wm(WeightType::BF16, n, k, w);
  std::vector<float> y(static_cast<size_t>(m * n));
  linear(wm, nullptr, x.data(), m, y.data());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double exact = 0.0, abs_sum = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        exact += double(x[size_t(r * k + i)]) * w[size_t(c * k + i)];
        abs_sum += std::fabs(double(x[size_t(r * k + i)]) * w[size_t(c * k + i)]);
      }
      EXPECT_LE(std::fabs(y[size_t(r * n + c)] - exact), (1.0 / 256 + 1e-4) * abs_sum);
    }
  }
}

TEST(CpuKernelsMatmul, ThreadedLinearMatchesReference) {
  for (WeightType type : {WeightType::F32, WeightType::BF16}) {
    const int64_t m = 6, k = 70, n = 1000;
    std::vector<float> x = random_vector(size_t(m * k)), w = random_vector(size_t(n * k));
    std::vector<float> bias = random_vector(size_t(n));
    DenseMatrix wm(type, n, k, w);
    std::vector<float> y(static_cast<size_t>(m * n)), ref(y.size());
    linear(wm, bias.data(), x.data(), m, y.data());
    std::vector<uint16_t> xb(x.size());
    std::vector<float> xr(x.size());
    reference_kernels().f32_to_bf16(x.data(), int64_t(x.size()), xb.data(), xr.data());
    MatmulArgs args;
    args.x = type == WeightType::BF16 ? xr.data() : x.data();
    args.ldx = k;
    args.m_rows = m;
    args.k = k;
    args.w = wm.data();
    args.ldw = k;
    args.bias = bias.data();
    args.y = ref.data();
    args.ldy = n;
    (type == WeightType::BF16 ? reference_kernels().matmul_bf16 : reference_kernels().matmul_f32)(
        args, 0, n);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-4) << i;
  }
}

TEST(CpuKernelsElementwise, RmsNormMatchesReference) {
  for (const KernelTable* t : simd_tables()) {
    for (int64_t n : {1, 5, 16, 17, 64, 100, 576, 2049}) {
      std::vector<float> x = random_vector(size_t(n), -3, 3),
                         w = random_vector(size_t(n), 0.5f, 1.5f);
      std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
      t->rmsnorm(x.data(), w.data(), n, 1e-5f, out.data());
      reference_kernels().rmsnorm(x.data(), w.data(), n, 1e-5f, ref.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(out[size_t(i)], ref[size_t(i)], 4e-6 * std::fabs(ref[size_t(i)]) + 1e-30)
            << t->name << " n=" << n;
      }
    }
  }
}

TEST(CpuKernelsElementwise, SiluMulMatchesReference) {
  for (const KernelTable* t : simd_tables()) {
    for (int64_t n : {1, 7, 16, 33, 1536}) {
      std::vector<float> g = random_vector(size_t(n), -30, 30), u = random_vector(size_t(n), -2, 2);
      g[0] = -200.0f;  // exp overflow side
      if (n > 1) g[1] = 200.0f;
      std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
      t->silu_mul(g.data(), u.data(), n, out.data());
      reference_kernels().silu_mul(g.data(), u.data(), n, ref.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_TRUE(std::isfinite(out[size_t(i)]));
        // exp to ~2 ulp, then a divide and two multiplies: 8 ulp relative.
        ASSERT_NEAR(out[size_t(i)], ref[size_t(i)],
                    8 * kUnitRoundoff * std::fabs(ref[size_t(i)]) + 1e-30)
            << t->name << " g=" << g[size_t(i)];
      }
    }
  }
}

TEST(CpuKernelsElementwise, AddAndBf16ConversionMatchReference) {
  for (const KernelTable* t : simd_tables()) {
    for (int64_t n : {1, 9, 64, 67}) {
      std::vector<float> y = random_vector(size_t(n)), x = random_vector(size_t(n)), ref = y;
      t->add_inplace(y.data(), x.data(), n);
      reference_kernels().add_inplace(ref.data(), x.data(), n);
      EXPECT_EQ(y, ref);
    }
    std::vector<float> x = random_vector(1000, -1e6f, 1e6f);
    x.insert(x.end(), {1.00390625f, INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1e-40f});
    std::vector<uint16_t> got(x.size());
    std::vector<float> rounded(x.size());
    t->f32_to_bf16(x.data(), int64_t(x.size()), got.data(), rounded.data());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(got[i], f32_to_bf16(x[i])) << x[i];
      ASSERT_EQ(std::bit_cast<uint32_t>(rounded[i]), uint32_t(got[i]) << 16);
    }
  }
}

TEST(CpuKernelsAttention, MatchesReferenceOverPagedBlocks) {
  for (const KernelTable* t : simd_tables()) {
    for (int64_t head_dim : {16, 64, 80, 128}) {
      for (int64_t block_size : {3, 16}) {
        for (int64_t n_ctx : {1, 2, 5, 16, 17, 40}) {
          const int64_t n_blocks = (n_ctx + block_size - 1) / block_size + 3;
          const int64_t stride = 2 * block_size * head_dim;  // two kv heads per block
          std::vector<float> keys = random_vector(size_t(n_blocks * stride), -2, 2);
          std::vector<float> values = random_vector(keys.size(), -1, 1);
          std::vector<float> q = random_vector(size_t(head_dim), -2, 2);
          std::vector<int32_t> table(static_cast<size_t>(n_blocks));
          std::iota(table.begin(), table.end(), 0);
          std::shuffle(table.begin(), table.end(), rng());
          std::vector<float> scores(static_cast<size_t>(n_ctx)), out(static_cast<size_t>(head_dim)),
              ref(static_cast<size_t>(head_dim));
          AttentionArgs args;
          args.q = q.data();
          args.keys = keys.data() + block_size * head_dim;  // second kv head
          args.values = values.data() + block_size * head_dim;
          args.block_stride = stride;
          args.block_table = table.data();
          args.block_size = block_size;
          args.n_ctx = n_ctx;
          args.head_dim = head_dim;
          args.scale = 1.0f / std::sqrt(float(head_dim));
          args.scores = scores.data();
          args.out = out.data();
          t->attention(args);
          args.out = ref.data();
          reference_kernels().attention(args);
          // A convex combination of values in [-1, 1]: absolute error.
          for (int64_t d = 0; d < head_dim; ++d) {
            ASSERT_NEAR(out[size_t(d)], ref[size_t(d)], 2e-6)
                << t->name << " head_dim=" << head_dim << " block_size=" << block_size
                << " n_ctx=" << n_ctx;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace nibble::cpu
