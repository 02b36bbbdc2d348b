#include "quantize/calibration_gemm.h"

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "backend/cpu/kernels.h"
#include "core/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define NIBBLE_GEMM_AVX2 1
#define NIBBLE_GEMM_AVX2_FMA __attribute__((target("avx2,fma")))
#endif

namespace nibble::quantize {
namespace {

// Register tile: 4 rows of x (broadcasts) × 24 outputs (three 8-float vectors) = 12
// accumulators + 3 weight vectors + 1 broadcast of 16 ymm. Measured on Zen 3 against 6 × 16,
// 3 × 32 and 5 × 16: 4 × 24 was fastest (fewest loads and broadcasts per FMA that fit).
constexpr int64_t kTileRows = 4;
constexpr int kPanelVecs = 3;
constexpr int64_t kPanelCols = 8 * kPanelVecs;
// Rows of x per task: 64 rows of K ≤ 1536 floats (≤ 384 KiB; 147 KiB at K = 576) stay in L2
// while each packed weight panel passes over all 16 of their tiles.
constexpr int64_t kBlockRows = 16 * kTileRows;

bool use_avx2() {
#if defined(NIBBLE_GEMM_AVX2)
  static const bool yes = std::string_view(cpu::isa_name()) != "scalar" &&
                          __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

#if defined(NIBBLE_GEMM_AVX2)

// One MR × 24 tile: y rows [0, MR), panel columns [0, nc) of `wp` ([k][24], zero-padded).
template <int MR>
NIBBLE_GEMM_AVX2_FMA void gemm_tile(const float* x, int64_t ldx, const float* wp, int64_t k,
                                    const float* bias, float* y, int64_t ldy, int64_t nc) {
  __m256 acc[MR][kPanelVecs];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t d = 0; d < k; ++d) {
    __m256 wv[kPanelVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) wv[v] = _mm256_loadu_ps(wp + d * kPanelCols + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + d);
#pragma GCC unroll 4
      for (int v = 0; v < kPanelVecs; ++v) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
    }
  }
  if (nc == kPanelCols) {
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) {
      const __m256 bv = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm256_storeu_ps(y + r * ldy + 8 * v, _mm256_add_ps(acc[r][v], bv));
    }
    return;
  }
  // Constant indices only (unrolled): a runtime index into acc would keep it in memory and add
  // a store per FMA pair.
  alignas(32) float tile[kPanelCols];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kPanelVecs; ++v) _mm256_store_ps(tile + 8 * v, acc[r][v]);
    for (int64_t n = 0; n < nc; ++n) y[r * ldy + n] = tile[n] + (bias ? bias[n] : 0.0f);
  }
}

void calibration_linear_avx2(const float* w, int64_t n_rows, int64_t k, const float* bias,
                             const float* x, int64_t ldx, int64_t m_rows, float* y, int64_t ldy) {
  // W packed as [panel][k][24]: a panel's 24 weights of one step of K are three adjacent
  // vectors, and a panel is read front to back.
  const int64_t panels = (n_rows + kPanelCols - 1) / kPanelCols;
  thread_local std::vector<float> packed;
  packed.assign(size_t(panels * k * kPanelCols), 0.0f);
  // A thread_local named inside the pool's lambdas would be each worker's own: use the pointer.
  float* const wp_all = packed.data();
  ThreadPool::global().parallel_for(panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* dst = wp_all + p * k * kPanelCols;
      const int64_t nc = std::min(kPanelCols, n_rows - p * kPanelCols);
      for (int64_t n = 0; n < nc; ++n) {
        const float* src = w + (p * kPanelCols + n) * k;
        for (int64_t d = 0; d < k; ++d) dst[d * kPanelCols + n] = src[d];
      }
    }
  });
  const int64_t blocks = (m_rows + kBlockRows - 1) / kBlockRows;
  ThreadPool::global().parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t m0 = b * kBlockRows, m1 = std::min(m_rows, m0 + kBlockRows);
      for (int64_t p = 0; p < panels; ++p) {
        const float* wp = wp_all + p * k * kPanelCols;
        const int64_t n0 = p * kPanelCols, nc = std::min(kPanelCols, n_rows - n0);
        const float* bp = bias ? bias + n0 : nullptr;
        int64_t m = m0;
        for (; m + kTileRows <= m1; m += kTileRows)
          gemm_tile<kTileRows>(x + m * ldx, ldx, wp, k, bp, y + m * ldy + n0, ldy, nc);
        switch (m1 - m) {
          case 3: gemm_tile<3>(x + m * ldx, ldx, wp, k, bp, y + m * ldy + n0, ldy, nc); break;
          case 2: gemm_tile<2>(x + m * ldx, ldx, wp, k, bp, y + m * ldy + n0, ldy, nc); break;
          case 1: gemm_tile<1>(x + m * ldx, ldx, wp, k, bp, y + m * ldy + n0, ldy, nc); break;
          default: break;
        }
      }
    }
  });
}

#endif  // NIBBLE_GEMM_AVX2

// The same f32 chain per output as the tile kernel (fused multiply-add in K order), one output
// at a time: the fallback without AVX2.
void calibration_linear_scalar(const float* w, int64_t n_rows, int64_t k, const float* bias,
                               const float* x, int64_t ldx, int64_t m_rows, float* y, int64_t ldy) {
  ThreadPool::global().parallel_for(m_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m)
      for (int64_t n = 0; n < n_rows; ++n) {
        float s = 0.0f;
        for (int64_t d = 0; d < k; ++d) s = std::fma(x[m * ldx + d], w[n * k + d], s);
        y[m * ldy + n] = s + (bias ? bias[n] : 0.0f);
      }
  });
}

}  // namespace

void calibration_linear_reference(const float* w, int64_t n_rows, int64_t k_dim, const float* bias,
                                  const float* x, int64_t ldx, int64_t m_rows, float* y,
                                  int64_t ldy) {
  for (int64_t m = 0; m < m_rows; ++m)
    for (int64_t n = 0; n < n_rows; ++n) {
      double s = bias ? double(bias[n]) : 0.0;
      for (int64_t d = 0; d < k_dim; ++d) s += double(x[m * ldx + d]) * double(w[n * k_dim + d]);
      y[m * ldy + n] = float(s);
    }
}

void calibration_linear(const float* w, int64_t n_rows, int64_t k_dim, const float* bias,
                        const float* x, int64_t ldx, int64_t m_rows, float* y, int64_t ldy) {
  if (m_rows <= 0 || n_rows <= 0) return;
#if defined(NIBBLE_GEMM_AVX2)
  if (use_avx2()) return calibration_linear_avx2(w, n_rows, k_dim, bias, x, ldx, m_rows, y, ldy);
#endif
  calibration_linear_scalar(w, n_rows, k_dim, bias, x, ldx, m_rows, y, ldy);
}

}  // namespace nibble::quantize
