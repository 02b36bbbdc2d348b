#include "quantize/blocked_linear_algebra.h"

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "quantize/calibration_kernels.h"
#include "quantize/linear_algebra.h"
#include "quantize/vector_ops.h"

namespace nibble::quantize {
namespace {

constexpr int64_t kBlock = 128;

// Left-looking Cholesky of the diagonal block [k0, k1), whose earlier columns' contributions the
// trailing updates have already subtracted (so its sums start at k0), then the rows below it
// solved against it.
bool factor_panel(std::vector<double>& a, int64_t n, int64_t k0, int64_t k1) {
  for (int64_t j = k0; j < k1; ++j) {
    double* rj = a.data() + j * n;
    const double d = rj[j] - dot(rj + k0, rj + k0, j - k0);
    if (!(d > 0.0)) return false;
    const double pivot = std::sqrt(d);
    rj[j] = pivot;
    for (int64_t i = j + 1; i < k1; ++i) {
      double* ri = a.data() + i * n;
      ri[j] = (ri[j] - dot(ri + k0, rj + k0, j - k0)) / pivot;
    }
  }
  ThreadPool::global().parallel_for(n - k1, 32, [&](int64_t begin, int64_t end) {
    for (int64_t i = k1 + begin; i < k1 + end; ++i) {
      double* ri = a.data() + i * n;
      for (int64_t j = k0; j < k1; ++j) {
        const double* rj = a.data() + j * n;
        ri[j] = (ri[j] - dot(ri + k0, rj + k0, j - k0)) / rj[j];
      }
    }
  });
  return true;
}

}  // namespace

bool cholesky_lower_blocked(std::vector<double>& a, int64_t n, int64_t block) {
  std::vector<double> panel;  // [width][rest]: the panel's columns, transposed for the GEMM
  for (int64_t k0 = 0; k0 < n; k0 += block) {
    const int64_t k1 = std::min(n, k0 + block), width = k1 - k0, rest = n - k1;
    if (!factor_panel(a, n, k0, k1)) return false;
    if (rest == 0) break;
    panel.resize(static_cast<size_t>(width * rest));
    for (int64_t r = 0; r < rest; ++r)
      for (int64_t d = 0; d < width; ++d)
        panel[size_t(d * rest + r)] = a[size_t((k1 + r) * n + k0 + d)];
    // The trailing lower triangle: A[i][j] −= Σ_c L[i][c]·L[j][c] for k1 ≤ j ≤ i, in row blocks
    // that stop at their own last column (the upper triangle is never read, and zeroed below).
    constexpr int64_t kRows = 64;
    ThreadPool::global().parallel_for((rest + kRows - 1) / kRows, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * kRows, r1 = std::min(rest, r0 + kRows);
        subtract_product(a.data() + (k1 + r0) * n + k1, n, panel.data() + r0, rest, panel.data(),
                         rest, r1 - r0, r1, width);
      }
    });
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i + 1; k < n; ++k) a[size_t(i * n + k)] = 0.0;
  return true;
}

void invert_lower_blocked(std::vector<double>& l, int64_t n, int64_t block) {
  std::vector<double> x(static_cast<size_t>(n * n), 0.0);
  std::vector<double> lt, t, diag;
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t i1 = std::min(n, i0 + block), width = i1 - i0;
    // X_ii = L_ii⁻¹ by the serial code.
    diag.assign(static_cast<size_t>(width * width), 0.0);
    for (int64_t r = 0; r < width; ++r)
      for (int64_t c = 0; c <= r; ++c)
        diag[size_t(r * width + c)] = l[size_t((i0 + r) * n + i0 + c)];
    invert_lower_inplace(diag, width);
    for (int64_t r = 0; r < width; ++r)
      for (int64_t c = 0; c <= r; ++c)
        x[size_t((i0 + r) * n + i0 + c)] = diag[size_t(r * width + c)];
    if (i0 == 0) continue;
    // X[i0:i1, :i0] = X_ii · T with T = −L[i0:i1, :i0] · X[:i0, :i0]: T by the GEMM in column
    // chunks over the pool (X is lower, so column c needs only the rows from c on).
    lt.resize(static_cast<size_t>(i0 * width));
    for (int64_t r = 0; r < width; ++r)
      for (int64_t d = 0; d < i0; ++d) lt[size_t(d * width + r)] = l[size_t((i0 + r) * n + d)];
    t.assign(static_cast<size_t>(width * i0), 0.0);
    constexpr int64_t kCols = 96;
    ThreadPool::global().parallel_for((i0 + kCols - 1) / kCols, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t col0 = c * kCols, col1 = std::min(i0, col0 + kCols);
        subtract_product(t.data() + col0, i0, lt.data() + col0 * width, width,
                         x.data() + col0 * n + col0, n, width, col1 - col0, i0 - col0);
      }
    });
    for (int64_t r = 0; r < width; ++r) {
      double* xr = x.data() + (i0 + r) * n;
      for (int64_t s = 0; s <= r; ++s) {
        const double f = diag[size_t(r * width + s)];
        if (f != 0.0) sub_scaled(xr, t.data() + s * i0, -f, i0);
      }
    }
  }
  l.swap(x);
}

bool inverse_upper_cholesky_auto(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  if (n < kBlockedFrom) return inverse_upper_cholesky(h, n, u);
  std::vector<double> m = reversed(h, n);
  if (!cholesky_lower_blocked(m, n, kBlock)) return false;
  invert_lower_blocked(m, n, kBlock);
  u = reversed(m, n);
  return true;
}

}  // namespace nibble::quantize
