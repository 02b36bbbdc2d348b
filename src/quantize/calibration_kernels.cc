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

// Gram (syrk) kernel: rows of x per chunk (each output sums this many products in f32, then
// the chunk's sums are added in double), and the register tile: kGramTileI rows of the triangle
// (broadcast scalars) by kGramTileJ columns (three 8-float vectors) = 12 accumulators, 3 loads
// and 1 broadcast of 16 ymm registers. A chunk's 24-column panel ([256][24] f32 = 24 KiB) stays
// in L1 while the 4-column panels stream past it. 4 × 24 measured faster than 6 × 16 on Zen 3
// (fewer broadcasts per FMA); 512-row chunks were no faster and double the f32 error bound.
constexpr int64_t kGramChunk = 256;
constexpr int64_t kGramTileI = 4;
constexpr int kGramVecs = 3;
constexpr int64_t kGramTileJ = 8 * kGramVecs;

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

// h[i·ldh + j] += Σ_t a[t·4 + i]·b[t·24 + j] for i < mi, j < nj (one chunk's panels).
NIBBLE_AVX2_FMA void gram_tile(const float* a, const float* b, int64_t rows, double* h, int64_t ldh,
                               int64_t mi, int64_t nj) {
  __m256 acc[kGramTileI][kGramVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kGramTileI; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kGramVecs; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t t = 0; t < rows; ++t) {
    __m256 bv[kGramVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kGramVecs; ++v) bv[v] = _mm256_loadu_ps(b + t * kGramTileJ + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kGramTileI; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + t * kGramTileI + r);
#pragma GCC unroll 4
      for (int v = 0; v < kGramVecs; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  if (mi == kGramTileI && nj == kGramTileJ) {
#pragma GCC unroll 8
    for (int r = 0; r < kGramTileI; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < kGramVecs; ++v) {
        double* dst = h + r * ldh + 8 * v;
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(acc[r][v]));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(acc[r][v], 1));
        _mm256_storeu_pd(dst, _mm256_add_pd(_mm256_loadu_pd(dst), lo));
        _mm256_storeu_pd(dst + 4, _mm256_add_pd(_mm256_loadu_pd(dst + 4), hi));
      }
    return;
  }
  // Constant indices only (unrolled): a runtime index into acc would keep it in memory and add
  // a store per FMA pair.
  alignas(32) float tile[kGramTileJ];
#pragma GCC unroll 8
  for (int r = 0; r < kGramTileI; ++r) {
    if (r >= mi) break;
#pragma GCC unroll 4
    for (int v = 0; v < kGramVecs; ++v) _mm256_store_ps(tile + 8 * v, acc[r][v]);
    for (int64_t j = 0; j < nj; ++j) h[r * ldh + j] += double(tile[j]);
  }
}

void accumulate_gram_avx2(const float* x, int64_t m, int64_t k, double* h) {
  // Each 256-row chunk of x packed twice: as 4-column panels [k/4][rows][4] (the broadcast side)
  // and as 24-column panels [k/24][rows][24] (the vector side), zero-padded past k. Up to 16
  // chunks are packed in one parallel region and multiplied in a second: two pool barriers per
  // 4096 rows, not per chunk (a barrier costs a wake-up, and on a shared machine a wait for a
  // descheduled worker).
  const int64_t panels_i = (k + kGramTileI - 1) / kGramTileI;
  const int64_t panels_j = (k + kGramTileJ - 1) / kGramTileJ;
  const int64_t chunk_i = panels_i * kGramChunk * kGramTileI;
  const int64_t chunk_j = panels_j * kGramChunk * kGramTileJ;
  const int64_t span = std::min(m, 16 * kGramChunk);
  const int64_t span_chunks = (span + kGramChunk - 1) / kGramChunk;
  // Kept between calls (up to 50 MB at K = 1536): fresh buffers per 4096-row call were most of
  // a GPTQ run's 17 million page faults. Pointers, not the thread_locals, go into the pool jobs.
  thread_local std::vector<float> pack_i_buffer, pack_j_buffer;
  pack_i_buffer.resize(size_t(span_chunks * chunk_i));
  pack_j_buffer.resize(size_t(span_chunks * chunk_j));
  float* const pack_i = pack_i_buffer.data();
  float* const pack_j = pack_j_buffer.data();
  // Column panel p meets the triangle rows i >= 24p, so its work shrinks with p: a task takes
  // panels p and panels_j - 1 - p, and all tasks are about equally long.
  const int64_t tasks = (panels_j + 1) / 2;
  for (int64_t s0 = 0; s0 < m; s0 += span) {
    const int64_t rows_here = std::min(span, m - s0);
    const int64_t chunks = (rows_here + kGramChunk - 1) / kGramChunk;
    const auto chunk_rows = [&](int64_t c) {
      return std::min(kGramChunk, rows_here - c * kGramChunk);
    };
    ThreadPool::global().parallel_for(
        chunks * (panels_i + panels_j), 4, [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t c = task / (panels_i + panels_j), p = task % (panels_i + panels_j);
            const int64_t rows = chunk_rows(c);
            const float* src = x + (s0 + c * kGramChunk) * k;
            const bool side_i = p < panels_i;
            const int64_t width = side_i ? kGramTileI : kGramTileJ;
            const int64_t panel = side_i ? p : p - panels_i;
            float* dst = side_i ? pack_i + c * chunk_i + panel * rows * kGramTileI
                                : pack_j + c * chunk_j + panel * rows * kGramTileJ;
            const int64_t c0 = panel * width, cols = std::min(width, k - c0);
            for (int64_t t = 0; t < rows; ++t) {
              float* d = dst + t * width;
              for (int64_t e = 0; e < cols; ++e) d[e] = src[t * k + c0 + e];
              for (int64_t e = cols; e < width; ++e) d[e] = 0.0f;
            }
          }
        });
    ThreadPool::global().parallel_for(tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t pair[2] = {task, panels_j - 1 - task};
        for (int e = 0; e < (pair[0] == pair[1] ? 1 : 2); ++e) {
          const int64_t p = pair[e];
          const int64_t j0 = p * kGramTileJ, nj = std::min(kGramTileJ, k - j0);
          // Chunks in order, so every output adds its chunk sums in the same order.
          for (int64_t c = 0; c < chunks; ++c) {
            const int64_t rows = chunk_rows(c);
            const float* b = pack_j + c * chunk_j + p * rows * kGramTileJ;
            const float* a = pack_i + c * chunk_i;
            for (int64_t q = j0 / kGramTileI; q < panels_i; ++q) {
              const int64_t i0 = q * kGramTileI, mi = std::min(kGramTileI, k - i0);
              // Elements above the diagonal in this tile are computed too and are overwritten
              // by the mirror.
              gram_tile(a + q * rows * kGramTileI, b, rows, h + i0 * k + j0, k, mi, nj);
            }
          }
        }
      }
    });
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
#if defined(NIBBLE_QUANTIZE_AVX2)
  if (use_avx2()) {
    accumulate_gram_avx2(x, m, k, h);
    mirror_lower(h, k);
    return;
  }
#endif
  accumulate_gram_reference(x, m, k, h);
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
