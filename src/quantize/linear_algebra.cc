#include "quantize/linear_algebra.h"

#include <algorithm>
#include <cmath>

#include "quantize/vector_ops.h"

namespace nibble::quantize {

// Serial on purpose: a K = 1536 factorisation is ~1e9 vectorised flops (a fraction of a second),
// while splitting each column step over the thread pool costs a wake-up per step — thousands of
// them — which on a loaded machine cost more than the arithmetic.

bool cholesky_lower_inplace(std::vector<double>& a, int64_t n) {
  // Left-looking by rows: row i needs only rows < i, and each inner product runs over two
  // contiguous row prefixes.
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    const double d = rj[j] - dot(rj, rj, j);
    if (!(d > 0.0)) return false;
    const double pivot = std::sqrt(d);
    rj[j] = pivot;
    for (int64_t i = j + 1; i < n; ++i) {
      double* ri = a.data() + i * n;
      ri[j] = (ri[j] - dot(ri, rj, j)) / pivot;
    }
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = i + 1; k < n; ++k) a[size_t(i * n + k)] = 0.0;
  return true;
}

void invert_lower_inplace(std::vector<double>& l, int64_t n) {
  // Row i of X = L⁻¹ is (e_i − Σ_{k<i} L[i][k]·X[k]) / L[i][i]: axpys of finished rows (X[k] is
  // zero past column k).
  std::vector<double> x(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* li = l.data() + i * n;
    double* xi = x.data() + i * n;
    for (int64_t k = 0; k < i; ++k)
      if (li[k] != 0.0) sub_scaled(xi, x.data() + k * n, li[k], k + 1);
    const double inv = 1.0 / li[i];
    for (int64_t c = 0; c < i; ++c) xi[c] *= inv;
    xi[i] = inv;
  }
  l.swap(x);
}

std::vector<double> reversed(const std::vector<double>& m, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      out[size_t(i * n + j)] = m[size_t((n - 1 - i) * n + (n - 1 - j))];
  return out;
}

bool inverse_upper_cholesky(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  std::vector<double> m = reversed(h, n);
  if (!cholesky_lower_inplace(m, n)) return false;
  invert_lower_inplace(m, n);
  u = reversed(m, n);
  return true;
}

}  // namespace nibble::quantize
