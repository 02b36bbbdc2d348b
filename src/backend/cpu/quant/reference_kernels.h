#pragma once
// Scalar reference of the quantized linear kernels (kernel_table.h, QuantMatmulArgs): the
// arithmetic every SIMD kernel is tested against. Sums run in double (integer dot products in
// int64), so the reference is a better answer than any kernel, not merely a different one.
#include <cstdint>

#include "backend/cpu/kernel_table.h"

namespace nibble::cpu {

// The real value of one code (before the group scale): nibble - 8, nibble, int8, e4m3, e5m2,
// NF4 table entry or e2m1 value.
float quant_code_value(QuantCodes kind, uint32_t code);
// Code of element k (0-based in the padded row) of a packed row (the chunk layout of
// kernel_table.h).
uint32_t quant_packed_code(QuantCodes kind, const uint8_t* row, int64_t k);
// The same for the layout `a` describes (the 64-element 4-bit form when a.nibbles64).
uint32_t quant_packed_code(const QuantMatmulArgs& a, const uint8_t* row, int64_t k);
bool quant_codes_are_4bit(QuantCodes kind);
// Group scale / min of a packed row (f16 or f32 storage).
float quant_param(const void* params, bool f16, int64_t index);

void quant_matmul_a16_reference(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end);
void quant_matmul_a8_reference(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end);

}  // namespace nibble::cpu
