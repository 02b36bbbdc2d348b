#pragma once
// A linear layer's weight in the form its CPU kernel wants. The model holds every projection as
// a LinearWeight, so a layer can be dense (f32/bf16) or quantized (any QuantizedTensor with its
// activation quantization) without the model knowing which kernel runs it.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/cpu/ops.h"

namespace nibble::quant {
struct QuantizedTensor;
struct ActQuant;
}  // namespace nibble::quant

namespace nibble::cpu {

class LinearWeight {
 public:
  virtual ~LinearWeight() = default;
  virtual int64_t rows() const = 0;  // output features N
  virtual int64_t cols() const = 0;  // input features K
  // Bytes the weight occupies in memory (codes, scales, zeros, repacked layouts).
  virtual size_t nbytes() const = 0;
  // What runs it, for logs and `nibble inspect`: "bf16", "int4 g128 w4a8 (avx2)", ...
  virtual std::string describe() const = 0;
  // y[m, N] = x[m, K] · Wᵀ (+ bias[N]); x and y densely packed; multithreaded over
  // ThreadPool::global(). Activation quantization, if the scheme has one, happens inside.
  virtual void forward(const float* x, int64_t m_rows, const float* bias, float* y) const = 0;
  // Row n of the weight that forward multiplies by, as f32 in out[K], when the layout can give
  // it (false otherwise): an output layer holding a GGUF embedding's blocks also serves the
  // embedding's row lookups.
  virtual bool weight_row(int64_t n, float* out) const {
    (void)n;
    (void)out;
    return false;
  }
};

std::unique_ptr<LinearWeight> make_dense_linear(DenseMatrix matrix);

// Repacks `weight` once for the fastest kernel this CPU has for (weight, act); a pair without a
// kernel is dequantized to a dense `fallback` matrix, with the activation quantization still
// applied, so that the numerics are the scheme's either way.
std::unique_ptr<LinearWeight> make_quantized_linear(const quant::QuantizedTensor& weight,
                                                    const quant::ActQuant& act,
                                                    WeightType fallback);

}  // namespace nibble::cpu
