#include "backend/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/numeric.h"

namespace nibble::cpu {
namespace {

template <typename LoadW>
void matmul_generic(const MatmulArgs& a, int64_t n_begin, int64_t n_end, LoadW load_w) {
  for (int64_t m = 0; m < a.m_rows; ++m) {
    const float* x = a.x + m * a.ldx;
    for (int64_t n = n_begin; n < n_end; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < a.k; ++k) acc += double(x[k]) * double(load_w(n * a.ldw + k));
      if (a.bias) acc += a.bias[n];
      a.y[m * a.ldy + n] = float(acc);
    }
  }
}

void matmul_f32(const MatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const auto* w = static_cast<const float*>(a.w);
  matmul_generic(a, n_begin, n_end, [w](int64_t i) { return w[i]; });
}

void matmul_bf16(const MatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const auto* w = static_cast<const uint16_t*>(a.w);
  // a.x already holds the bf16-rounded activations as f32.
  matmul_generic(a, n_begin, n_end, [w](int64_t i) { return bf16_to_f32(w[i]); });
}

void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  const float inv = float(1.0 / std::sqrt(double(float(ss / double(n))) + double(eps)));
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = float(g / (1.0 + std::exp(-g)) * double(up[i]));
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void to_bf16(const float* x, int64_t n, uint16_t* out, float* rounded) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = f32_to_bf16(x[i]);
    if (rounded) rounded[i] = bf16_to_f32(out[i]);
  }
}

void attention(const AttentionArgs& a) {
  auto row = [&](const float* base, int64_t j) {
    return base + a.block_table[j / a.block_size] * a.block_stride +
           (j % a.block_size) * a.head_dim;
  };
  float max_score = -INFINITY;
  for (int64_t j = 0; j < a.n_ctx; ++j) {
    const float* k = row(a.keys, j);
    double dot = 0.0;
    for (int64_t d = 0; d < a.head_dim; ++d) dot += double(a.q[d]) * double(k[d]);
    a.scores[j] = float(dot) * a.scale;
    max_score = std::max(max_score, a.scores[j]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < a.n_ctx; ++j) {
    a.scores[j] = float(std::exp(double(a.scores[j] - max_score)));
    sum += a.scores[j];
  }
  std::vector<double> acc(size_t(a.head_dim), 0.0);
  for (int64_t j = 0; j < a.n_ctx; ++j) {
    const float* v = row(a.values, j);
    for (int64_t d = 0; d < a.head_dim; ++d) acc[size_t(d)] += double(a.scores[j]) * double(v[d]);
  }
  for (int64_t d = 0; d < a.head_dim; ++d) a.out[d] = float(acc[size_t(d)] / sum);
}

}  // namespace

const KernelTable& reference_kernels() {
  static const KernelTable table = [] {
    KernelTable t;
    t.name = "scalar";
    t.matmul_f32 = matmul_f32;
    t.matmul_bf16 = matmul_bf16;
    t.rmsnorm = rmsnorm;
    t.silu_mul = silu_mul;
    t.add_inplace = add_inplace;
    t.f32_to_bf16 = to_bf16;
    t.attention = attention;
    return t;
  }();
  return table;
}

}  // namespace nibble::cpu
