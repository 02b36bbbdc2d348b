#include "backend/cpu/ops.h"

#include <algorithm>

#include "backend/cpu/kernels.h"
#include "core/error.h"
#include "core/numeric.h"
#include "core/thread_pool.h"

namespace nibble::cpu {
namespace {
// Work units of output columns: a multiple of every kernel's tile width (3, 6, 8) so that
// threads never split a register tile.
constexpr int64_t kColumnUnit = 24;
// Below this many elements of work an elementwise op is not worth waking the pool.
constexpr int64_t kElementwiseGrain = 16384;
}  // namespace

DenseMatrix::DenseMatrix(WeightType type, int64_t rows, int64_t cols, std::span<const float> values)
    : type_(type), rows_(rows), cols_(cols) {
  NIBBLE_CHECK(rows > 0 && cols > 0 && int64_t(values.size()) == rows * cols,
               "DenseMatrix: {} values for a {}x{} matrix", values.size(), rows, cols);
  if (type == WeightType::F32) {
    f32_.assign(values.begin(), values.end());
  } else {
    bf16_.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) bf16_[i] = f32_to_bf16(values[i]);
  }
}

const void* DenseMatrix::data() const {
  return type_ == WeightType::F32 ? static_cast<const void*>(f32_.data())
                                  : static_cast<const void*>(bf16_.data());
}

size_t DenseMatrix::nbytes() const { return f32_.size() * 4 + bf16_.size() * 2; }

void DenseMatrix::row_f32(int64_t r, float* out) const {
  if (type_ == WeightType::F32) {
    std::copy_n(f32_.data() + r * cols_, cols_, out);
  } else {
    const uint16_t* row = bf16_.data() + r * cols_;
    for (int64_t i = 0; i < cols_; ++i) out[i] = bf16_to_f32(row[i]);
  }
}

void linear(const DenseMatrix& w, const float* bias, const float* x, int64_t m_rows, float* y) {
  if (m_rows <= 0) return;
  const KernelTable& kt = kernels();
  MatmulArgs args;
  args.x = x;
  args.ldx = w.cols();
  args.m_rows = m_rows;
  args.k = w.cols();
  args.w = w.data();
  args.ldw = w.cols();
  args.bias = bias;
  args.y = y;
  args.ldy = w.rows();
  MatmulFn fn = kt.matmul_f32;
  // Activations are rounded to bf16 once per call, not per thread.
  thread_local std::vector<uint16_t> x_bf16;
  thread_local std::vector<float> x_rounded;
  if (w.type() == WeightType::BF16) {
    const size_t count = size_t(m_rows * w.cols());
    x_bf16.resize(count);
    x_rounded.resize(count);
    kt.f32_to_bf16(x, int64_t(count), x_bf16.data(), x_rounded.data());
    args.x = x_rounded.data();
    args.x_bf16 = x_bf16.data();
    fn = kt.matmul_bf16;
  }
  const int64_t n = w.rows();
  const int64_t units = (n + kColumnUnit - 1) / kColumnUnit;
  ThreadPool::global().parallel_for(units, 1, [&](int64_t begin, int64_t end) {
    fn(args, begin * kColumnUnit, std::min(n, end * kColumnUnit));
  });
}

void rmsnorm_rows(const float* x, const float* weight, int64_t rows, int64_t n, float eps,
                  float* out) {
  const auto norm = kernels().rmsnorm;
  ThreadPool::global().parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / n),
                                    [&](int64_t begin, int64_t end) {
                                      for (int64_t r = begin; r < end; ++r) {
                                        norm(x + r * n, weight, n, eps, out + r * n);
                                      }
                                    });
}

void silu_mul_rows(const float* gate_up, int64_t rows, int64_t n, float* out) {
  const auto silu_mul = kernels().silu_mul;
  ThreadPool::global().parallel_for(
      rows, std::max<int64_t>(1, kElementwiseGrain / n), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          silu_mul(gate_up + r * 2 * n, gate_up + r * 2 * n + n, n, out + r * n);
        }
      });
}

void add_inplace(float* y, const float* x, int64_t count) { kernels().add_inplace(y, x, count); }

}  // namespace nibble::cpu
