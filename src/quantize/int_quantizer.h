#pragma once
// Integer weight quantization of one linear layer W[N, K]: round-to-nearest (RTN) and GPTQ
// (Frantar et al. 2022, as AutoGPTQ / GPTQModel run it): columns are quantized one at a time
// and each one's rounding error is spread over the columns not yet quantized through the
// inverse Hessian of the layer's inputs, H = 2·XᵀX/n. The grid is GPTQ's (= compressed-tensors'):
// symmetric scale = 2·amax/(2^b − 1) with zero 2^(b−1); asymmetric scale = (max − min)/(2^b − 1)
// with min ≤ 0 ≤ max and zero = round(−min/scale).
#include <cstdint>
#include <span>
#include <vector>

#include "quant/scheme.h"

namespace nibble::quantize {

struct IntQuantOptions {
  int bits = 4;              // 2, 3, 4, 8
  int64_t group_size = 128;  // -1: one group per row; a partial last group is allowed
  bool symmetric = true;
  // Scales are rounded to the dtype the export stores them in before any code is computed,
  // so the in-memory result and the exported checkpoint dequantize to the same values.
  quant::ScaleDType scale_dtype = quant::ScaleDType::F32;
  // GPTQ v1 stores zero − 1 per field: a zero point of 0 would underflow into the next field
  // (checkpoint-formats.md §1.5), so the GPTQ exporter asks for zeros ≥ 1.
  int32_t min_zero = 0;
};

struct GptqOptions {
  double damp_percent = 0.01;  // of mean(diag(H)), added to the diagonal
  bool act_order = false;      // desc_act: columns in descending diag(H) order
  bool static_groups = false;  // group parameters fixed on natural column blocks up front
  int64_t block_size = 128;    // lazy-batch width of the column updates
};

// What GPTQ needs from a Hessian, computed once per input group (q/k/v share one, gate/up
// another): the processing order, dead channels and the upper Cholesky factor of the damped
// inverse in that order.
struct GptqHessian {
  int64_t cols = 0;
  std::vector<int64_t> perm;  // processing position → column
  std::vector<uint8_t> dead;  // by column: H[k][k] == 0
  std::vector<double> u;      // [K, K] row-major, upper
};
GptqHessian prepare_gptq_hessian(std::span<const double> h, int64_t cols, const GptqOptions& gptq);

// Rounds `v` to the representable value of a scale dtype (f32, f16, bf16).
float round_scale(float v, quant::ScaleDType dtype);

// RTN: every group's parameters from its own min/max, codes by round-half-to-even.
quant::QuantizedTensor quantize_int_rtn(std::span<const float> w, int64_t rows, int64_t cols,
                                        const IntQuantOptions& options);

// GPTQ with the Hessian h[K·K] (row-major, symmetric; only read). Dead input channels
// (H[k][k] == 0) get zero weight, as in the reference. With act_order and without
// static_groups the result carries g_idx (the group of each column in processing order).
quant::QuantizedTensor quantize_int_gptq(std::span<const float> w, int64_t rows, int64_t cols,
                                         std::span<const double> h, const IntQuantOptions& options,
                                         const GptqOptions& gptq);
quant::QuantizedTensor quantize_int_gptq(std::span<const float> w, int64_t rows, int64_t cols,
                                         const GptqHessian& prepared,
                                         const IntQuantOptions& options, const GptqOptions& gptq);

// Quantize-dequantize (RTN on the same grid) of `count` values of one row's group, and of a
// whole weight: what the searches of AWQ and SmoothQuant evaluate.
void fake_quantize_group(const float* v, int64_t count, const IntQuantOptions& options, float* out);
std::vector<float> fake_quantize_rtn(std::span<const float> w, int64_t rows, int64_t cols,
                                     const IntQuantOptions& options);

// Σ over rows of (x·(W − Ŵ)ᵀ)² / rows for inputs x[m, K]: the output error a quantized layer
// adds on these inputs (for logs and tests).
double output_error(std::span<const float> w, std::span<const float> w_hat, int64_t rows,
                    int64_t cols, std::span<const float> x, int64_t m);

}  // namespace nibble::quantize
