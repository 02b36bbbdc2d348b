#pragma once
// The dense y = x·Wᵀ of the calibration forward (every linear layer over 65k calibration tokens:
// two thirds of a GPTQ run's flops). Unlike the engine's matmul, whose outputs are dot products
// of a fixed lane order so that decode and prefill agree bit for bit, this one is a packed
// outer-product GEMM: W is packed once per call into 24-column panels, and a 4 × 24 register tile
// takes 4 broadcast activations and 3 weight vectors per step of K for 12 FMAs, with no
// horizontal sums. Each output is one f32 FMA chain over K in order, so
// |error| ≤ K·2⁻²⁴·Σ_k |x_k·w_k| (the scalar reference sums the same chain in double).
#include <cstdint>

namespace nibble::quantize {

// y[m·ldy + n] = Σ_k x[m·ldx + k]·w[n·k_dim + k] (+ bias[n]) for m < m_rows, n < n_rows.
// W is row-major [n_rows, k_dim]; bias may be null. Multithreaded over row blocks of x: do not
// call from a ThreadPool job.
void calibration_linear(const float* w, int64_t n_rows, int64_t k_dim, const float* bias,
                        const float* x, int64_t ldx, int64_t m_rows, float* y, int64_t ldy);
void calibration_linear_reference(const float* w, int64_t n_rows, int64_t k_dim, const float* bias,
                                  const float* x, int64_t ldx, int64_t m_rows, float* y,
                                  int64_t ldy);

}  // namespace nibble::quantize
