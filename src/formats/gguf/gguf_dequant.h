#pragma once
// Scalar reference (de)quantization of ggml block types. Each routine performs the same
// float32 operations, in the same order, as the `gguf` Python package
// (gguf.quants.dequantize / quantize), so results are bit-identical to it; kernels are
// tested against these.
#include <cstdint>

#include "formats/gguf/gguf_file.h"

namespace nibble::gguf {

bool can_dequantize(GgmlType type);
// F32, F16, BF16, F64, I8, I16, I32, I64 and Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K.
// `src` holds n_elements / block_elems blocks; n_elements must be a multiple of the block
// size (Error otherwise, or for a type without dequantization). Unaligned `src` is fine.
void dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n_elements);

bool can_quantize(GgmlType type);
// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0. `dst` receives
// n_elements / block_elems * block_bytes bytes.
void quantize_row(GgmlType type, const float* src, uint8_t* dst, int64_t n_elements);

// Bytes that n_elements of `type` occupy (Error if not a whole number of blocks).
uint64_t row_bytes(GgmlType type, int64_t n_elements);

}  // namespace nibble::gguf
