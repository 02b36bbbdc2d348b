#pragma once
// Multithreaded CPU operations over whole batches, built on the dispatched kernels: dense
// weights (f32 or bf16) and y = x·Wᵀ split over output columns on ThreadPool::global().
#include <cstdint>
#include <span>
#include <vector>

#include "core/huge_page_allocator.h"

namespace nibble::cpu {

enum class WeightType { F32, BF16 };

// A dense weight matrix W[rows, cols] (PyTorch orientation: rows are output features), stored
// in the precision the kernels compute with.
class DenseMatrix {
 public:
  DenseMatrix() = default;
  // Converts `values` (row-major, rows*cols) to `type` (bf16: round to nearest even).
  DenseMatrix(WeightType type, int64_t rows, int64_t cols, std::span<const float> values);

  WeightType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const void* data() const;
  size_t nbytes() const;
  // Copies row r to `out` as f32 (embedding lookup).
  void row_f32(int64_t r, float* out) const;

 private:
  WeightType type_ = WeightType::F32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  HugePageVector<float> f32_;
  HugePageVector<uint16_t> bf16_;
};

// y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]); x is [m_rows, W.cols()], y is [m_rows, W.rows()],
// both densely packed. bias may be null.
void linear(const DenseMatrix& w, const float* bias, const float* x, int64_t m_rows, float* y);

// out[t] = rmsnorm(x[t]) * weight for each of `rows` rows of length n.
void rmsnorm_rows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                  float* out);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, n + i] for rows of gate_up of length 2n.
void silu_mul_rows(const float* gate_up, int64_t rows, int64_t n, float* out);

// y += x over `count` elements.
void add_inplace(float* y, const float* x, int64_t count);

}  // namespace nibble::cpu
