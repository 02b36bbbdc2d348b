#include "backend/cpu/linear_weight.h"

#include <utility>

namespace nibble::cpu {
namespace {

class DenseLinear final : public LinearWeight {
 public:
  explicit DenseLinear(DenseMatrix matrix) : matrix_(std::move(matrix)) {}
  int64_t rows() const override { return matrix_.rows(); }
  int64_t cols() const override { return matrix_.cols(); }
  size_t nbytes() const override { return matrix_.nbytes(); }
  std::string describe() const override {
    return matrix_.type() == WeightType::F32 ? "f32" : "bf16";
  }
  void forward(const float* x, int64_t m_rows, const float* bias, float* y) const override {
    linear(matrix_, bias, x, m_rows, y);
  }
  bool weight_row(int64_t n, float* out) const override {
    matrix_.row_f32(n, out);
    return true;
  }

 private:
  DenseMatrix matrix_;
};

}  // namespace

std::unique_ptr<LinearWeight> make_dense_linear(DenseMatrix matrix) {
  return std::make_unique<DenseLinear>(std::move(matrix));
}

}  // namespace nibble::cpu
