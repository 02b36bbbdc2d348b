#include "quantize/calibration_kernels.h"

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "backend/cpu/kernel_table.h"
#include "backend/cpu/kernels.h"
#include "core/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define NIBBLE_QUANTIZE_AVX2 1
#define NIBBLE_AVX2_FMA __attribute__((target("avx2,fma")))
#endif

namespace nibble::quantize {
namespace {

// Rows of x per transposed chunk (the dot-product length of the Gram kernel calls: f32 sums over
// this many products, each chunk's sums added in double) and rows of the triangle per task.
constexpr int64_t kGramChunk = 1024;
constexpr int64_t kGramRowBlock = 32;

// GPTQ update tile: 4 rows × 12 columns of doubles = 12 accumulators + 3 vectors of B + 1
// broadcast.
constexpr int kSubRows = 4;
constexpr int kSubVecs = 3;
constexpr int64_t kSubCols = 4 * kSubVecs;
constexpr int64_t kSubColBlock = 4 * kSubCols;

bool use_avx2() {
#if defined(NIBBLE_QUANTIZE_AVX2)
  static const bool yes = std::string_view(cpu::isa_name()) != "scalar" &&
                          __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

void mirror_lower(double* h, int64_t k) {
  // Blocked so both the rows read and the rows written stay in cache.
  constexpr int64_t kBlock = 32;
  for (int64_t i0 = 0; i0 < k; i0 += kBlock)
    for (int64_t j0 = i0; j0 < k; j0 += kBlock)
      for (int64_t i = i0; i < std::min(k, i0 + kBlock); ++i)
        for (int64_t j = std::max(j0, i + 1); j < std::min(k, j0 + kBlock); ++j)
          h[i * k + j] = h[j * k + i];
}

#if defined(NIBBLE_QUANTIZE_AVX2)

// c −= A·B for one MR × (4·NV) tile; A packed as [depth][MR].
template <int MR, int NV>
NIBBLE_AVX2_FMA void sub_tile(double* c, int64_t ldc, const double* ap, const double* b,
                              int64_t ldb, int64_t depth) {
  __m256d acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_loadu_pd(c + r * ldc + 4 * v);
  for (int64_t d = 0; d < depth; ++d) {
    __m256d bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_pd(b + d * ldb + 4 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256d a = _mm256_broadcast_sd(ap + d * MR + r);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fnmadd_pd(a, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm256_storeu_pd(c + r * ldc + 4 * v, acc[r][v]);
}

template <int MR>
NIBBLE_AVX2_FMA void sub_row_tile(double* c, int64_t ldc, const double* ap, const double* b,
                                  int64_t ldb, int64_t cols, int64_t depth) {
  int64_t n = 0;
  for (; n + kSubCols <= cols; n += kSubCols)
    sub_tile<MR, kSubVecs>(c + n, ldc, ap, b + n, ldb, depth);
  for (; n + 4 <= cols; n += 4) sub_tile<MR, 1>(c + n, ldc, ap, b + n, ldb, depth);
  for (; n < cols; ++n)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      double v = c[r * ldc + n];
      for (int64_t d = 0; d < depth; ++d) v -= ap[d * MR + r] * b[d * ldb + n];
      c[r * ldc + n] = v;
    }
}

NIBBLE_AVX2_FMA void subtract_product_avx2(double* c, int64_t ldc, const double* at, int64_t lda,
                                           const double* b, int64_t ldb, int64_t rows, int64_t cols,
                                           int64_t depth) {
  // A packed tile by tile ([tile][d][row], one contiguous stream per tile); B's columns taken in
  // blocks small enough (depth × kSubColBlock doubles) to stay in L2 while every row tile passes.
  thread_local std::vector<double> packed;
  const int64_t tiles = (rows + kSubRows - 1) / kSubRows;
  packed.resize(size_t(tiles * depth * kSubRows));
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * kSubRows;
    const int mr = int(std::min<int64_t>(kSubRows, rows - r0));
    double* p = packed.data() + t * depth * kSubRows;
    for (int64_t d = 0; d < depth; ++d)
      for (int r = 0; r < mr; ++r) p[d * mr + r] = at[d * lda + r0 + r];
  }
  for (int64_t n0 = 0; n0 < cols; n0 += kSubColBlock) {
    const int64_t nc = std::min(kSubColBlock, cols - n0);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kSubRows;
      const int mr = int(std::min<int64_t>(kSubRows, rows - r0));
      const double* p = packed.data() + t * depth * kSubRows;
      double* ct = c + r0 * ldc + n0;
      switch (mr) {
        case 4: sub_row_tile<4>(ct, ldc, p, b + n0, ldb, nc, depth); break;
        case 3: sub_row_tile<3>(ct, ldc, p, b + n0, ldb, nc, depth); break;
        case 2: sub_row_tile<2>(ct, ldc, p, b + n0, ldb, nc, depth); break;
        default: sub_row_tile<1>(ct, ldc, p, b + n0, ldb, nc, depth); break;
      }
    }
  }
}

#endif  // NIBBLE_QUANTIZE_AVX2

}  // namespace

void accumulate_gram_reference(const float* x, int64_t m, int64_t k, double* h) {
  for (int64_t t = 0; t < m; ++t)
    for (int64_t i = 0; i < k; ++i) {
      const double xi = x[t * k + i];
      for (int64_t j = 0; j < k; ++j) h[i * k + j] += xi * double(x[t * k + j]);
    }
}

void accumulate_gram(const float* x, int64_t m, int64_t k, double* h) {
  if (m <= 0 || k <= 0) return;
  // The engine's matmul computes each output as one dot product over the chunk's rows with a
  // fixed summation order, so y[i][j] == y[j][i] bit for bit: computing only the row blocks of
  // the lower triangle and mirroring gives exactly the full product, for half the flops.
  const int64_t chunk = std::min(m, kGramChunk);
  std::vector<float> xt(size_t(k * chunk));
  std::vector<float> y(size_t(k * k));
  const cpu::MatmulFn matmul = cpu::kernels().matmul_f32;
  const int64_t blocks = (k + kGramRowBlock - 1) / kGramRowBlock;
  for (int64_t r0 = 0; r0 < m; r0 += chunk) {
    const int64_t rows = std::min(chunk, m - r0);
    // Xᵀ of the chunk, [k, rows]: the products run along contiguous memory.
    ThreadPool::global().parallel_for(k, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = x + (r0 + r) * k;
        for (int64_t c = c0; c < c1; ++c) xt[size_t(c * rows + r)] = src[c];
      }
    });
    // Row block b needs columns [0, end of b): later blocks are longer, so they go first.
    ThreadPool::global().parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i0 = (blocks - 1 - task) * kGramRowBlock;
        const int64_t i1 = std::min(k, i0 + kGramRowBlock);
        cpu::MatmulArgs a;
        a.x = xt.data() + i0 * rows;
        a.ldx = rows;
        a.m_rows = i1 - i0;
        a.k = rows;
        a.w = xt.data();
        a.ldw = rows;
        a.y = y.data() + i0 * k;
        a.ldy = k;
        matmul(a, 0, i1);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = 0; j <= i; ++j) h[i * k + j] += double(y[size_t(i * k + j)]);
      }
    });
  }
  mirror_lower(h, k);
}

void subtract_product_reference(double* c, int64_t ldc, const double* at, int64_t lda,
                                const double* b, int64_t ldb, int64_t rows, int64_t cols,
                                int64_t depth) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < cols; ++n) {
      double v = c[r * ldc + n];
      for (int64_t d = 0; d < depth; ++d) v -= at[d * lda + r] * b[d * ldb + n];
      c[r * ldc + n] = v;
    }
}

void subtract_product(double* c, int64_t ldc, const double* at, int64_t lda, const double* b,
                      int64_t ldb, int64_t rows, int64_t cols, int64_t depth) {
  if (rows <= 0 || cols <= 0 || depth <= 0) return;
#if defined(NIBBLE_QUANTIZE_AVX2)
  if (use_avx2()) return subtract_product_avx2(c, ldc, at, lda, b, ldb, rows, cols, depth);
#endif
  subtract_product_reference(c, ldc, at, lda, b, ldb, rows, cols, depth);
}

}  // namespace nibble::quantize
