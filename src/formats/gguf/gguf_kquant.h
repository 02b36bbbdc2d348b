#pragma once
// Reference quantizer of the ggml K-quant Q4_K (llama.cpp's quantize_row_q4_K_ref algorithm):
// super-blocks of 256 values in 8 sub-blocks of 32, each sub-block with a 6-bit scale and a
// 6-bit min relative to the super-block's f16 d and dmin; value = d·sc·q − dmin·m, q ∈ [0, 15].
// The per-sub-block (scale, min) pair is chosen by a weighted least-squares search over 21
// candidate scales (weights |x| + rms of the sub-block), as llama.cpp does without an
// importance matrix. The blocks dequantize with gguf_dequant.h (and gguf-py) like any Q4_K.
#include <cstdint>

#include "formats/gguf/gguf_file.h"

namespace nibble::gguf {

inline constexpr int kQ4KBlockElems = 256;
inline constexpr int kQ4KBlockBytes = 144;

// `n_elements` must be a multiple of 256 (Error otherwise); `dst` receives
// n_elements / 256 * 144 bytes.
void quantize_row_q4_k(const float* src, uint8_t* dst, int64_t n_elements);

// One 256-element super-block the way llama.cpp quantizes it with an importance matrix
// (quantize_row_q4_K_impl): element weights weights[i]·sqrt(σ² + x[i]²), σ² = 2·mean(x²), a
// finer 37-candidate sub-block search, and the 6-bit scales and mins fitted by weighted least
// squares. gguf_weighted_quant.h wraps it with the safeguards nibble adds.
void quantize_block_q4_k_weighted(const float* x, const float* weights, uint8_t* dst);

// The type a matrix whose rows have `row_elems` values is written in when `requested` is asked
// for: K-quants need rows of whole 256-element super-blocks, and like llama.cpp's quantizer a
// row that is not falls back to a 32-element type of at least the same precision (Q4_K → Q5_0:
// Q4_0 would lose a bit per weight against the 4.5 bits of Q4_K, Q5_0 spends 5.5). Other types
// are returned as they are.
GgmlType kquant_row_type(GgmlType requested, int64_t row_elems);

}  // namespace nibble::gguf
