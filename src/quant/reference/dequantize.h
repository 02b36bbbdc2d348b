#pragma once
// The scalar truth of QuantizedTensor: what each code of each element type and layout means.
// Kernels and loaders are tested against these functions.
#include <cstdint>
#include <string_view>
#include <vector>

#include "quant/scheme.h"

namespace nibble::quant {

// Checks that the sizes of codes / scales / zeros / g_idx agree with the shape and layout.
// `what` names the tensor in the Error.
void validate(const QuantizedTensor& t, std::string_view what);

// Code of element (n, k) (not for GgufBlock).
uint32_t get_code(const QuantizedTensor& t, int64_t n, int64_t k);
void set_code(QuantizedTensor& t, int64_t n, int64_t k, uint32_t code);

// Scale-table index of element (n, k), honouring g_idx.
int64_t scale_index(const QuantizedTensor& t, int64_t n, int64_t k);

// Sizes `codes` (zeroed) and `row_bytes` for elem/rows/cols.
void allocate_codes(QuantizedTensor& t);
// Sets the scale block shape and sizes `scales` (and zeros when zero_kind says so).
void set_scale_layout(QuantizedTensor& t, int64_t block_rows, int64_t block_cols);

// Rows [row_begin, row_end) of W as f32, row-major, into out[(row_end-row_begin) * cols].
// Computed as float(code - zero) * scale * global_scale (int), decode(code) * scale *
// global_scale (float types), code * scale + zero (float zeros): every product of a ≤8-bit
// code with an f16/bf16/e4m3 scale is exact in f32.
void dequantize_rows(const QuantizedTensor& t, int64_t row_begin, int64_t row_end, float* out);
std::vector<float> dequantize(const QuantizedTensor& t);

}  // namespace nibble::quant
