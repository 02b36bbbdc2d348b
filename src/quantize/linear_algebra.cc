#include "quantize/linear_algebra.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/thread_pool.h"

namespace nibble::quantize {
namespace {

// Splits a loop over the pool only when it holds enough work: a parallel_for costs a wake-up of
// the workers, which on a loaded machine can take longer than a small loop itself.
void maybe_parallel(int64_t n, int64_t work_per_item,
                    const std::function<void(int64_t, int64_t)>& fn) {
  if (n * work_per_item < (int64_t(1) << 17) || n < 2) {
    if (n > 0) fn(0, n);
    return;
  }
  ThreadPool::global().parallel_for(n, std::max<int64_t>(1, n / 8), fn);
}

}  // namespace

bool cholesky_lower_inplace(std::vector<double>& a, int64_t n) {
  // Left-looking by rows: row i needs only rows < i, and each inner product runs over two
  // contiguous row prefixes, which vectorises. Rows below a finished pivot are independent,
  // so each column step splits them over the pool.
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    double d = rj[j];
    for (int64_t k = 0; k < j; ++k) d -= rj[k] * rj[k];
    if (!(d > 0.0)) return false;
    const double pivot = std::sqrt(d);
    rj[j] = pivot;
    const int64_t rest = n - j - 1;
    if (rest == 0) break;
    maybe_parallel(rest, j + 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double* ri = a.data() + (j + 1 + r) * n;
        double s = ri[j];
        for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
        ri[j] = s / pivot;
      }
    });
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i + 1; k < n; ++k) a[size_t(i * n + k)] = 0.0;
  return true;
}

void invert_lower_inplace(std::vector<double>& l, int64_t n) {
  // Row i of X = L⁻¹ is (e_i − Σ_{k<i} L[i][k]·X[k]) / L[i][i]: axpys of finished rows, whose
  // columns split over the pool. The input row i is read before it is overwritten.
  std::vector<double> x(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* li = l.data() + i * n;
    double* xi = x.data() + i * n;
    maybe_parallel(i, i, [&](int64_t begin, int64_t end) {
      for (int64_t k = 0; k < i; ++k) {
        const double c = li[k];
        if (c == 0.0) continue;
        const double* xk = x.data() + k * n;
        // X[k] is zero past column k.
        const int64_t stop = std::min(end, k + 1);
        for (int64_t c2 = begin; c2 < stop; ++c2) xi[c2] -= c * xk[c2];
      }
    });
    const double inv = 1.0 / li[i];
    for (int64_t c = 0; c < i; ++c) xi[c] *= inv;
    xi[i] = inv;
  }
  l.swap(x);
}

bool inverse_upper_cholesky(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  std::vector<double> m(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[size_t(i * n + j)] = h[size_t((n - 1 - i) * n + (n - 1 - j))];
  if (!cholesky_lower_inplace(m, n)) return false;
  invert_lower_inplace(m, n);
  u.assign(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) u[size_t(i * n + j)] = m[size_t((n - 1 - i) * n + (n - 1 - j))];
  return true;
}

}  // namespace nibble::quantize
