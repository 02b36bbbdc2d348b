#pragma once
// Importance-weighted quantization of ggml block types (llama.cpp's "imatrix"): each input
// column j of a matrix has an importance q_j, the mean of x_j² over calibration inputs, so that
// Σ_j q_j·(w_j − ŵ_j)² estimates the squared output error a row's rounding causes. The block
// searches minimise weighted squared error with element weights q_j·sqrt(σ² + w_j²) (σ²: the
// row's or super-block's mean w², as llama.cpp), for:
//   Q4_0, Q5_0  a search over 19 candidate scales around amax/−nmax (make_qx_quants),
//   Q4_K        quantize_block_q4_k_weighted (gguf_kquant.h).
// Two safeguards on top: the importance is divided by its maximum over the block (the search
// is invariant to a common factor; dividing makes it exactly so, and uniform importance of any
// size gives the same bytes), and each block is compared with the reference (unweighted)
// quantizer's block by Σ q_j·(w_j − ŵ_j)²: the reference block is kept unless the search is
// strictly better, so the result is never worse than the reference on that measure.
#include <cstdint>

#include "formats/gguf/gguf_file.h"

namespace nibble::gguf {

// Q4_0, Q5_0, Q4_K. (llama.cpp ignores an importance matrix for Q8_0 too: 8-bit rounding
// leaves nothing for it to steer.)
bool can_quantize_weighted(GgmlType type);

// `importance`: n_elements values ≥ 0 (the row's columns), or nullptr for the reference
// quantizer (quantize_row). Non-finite or negative importance is an Error.
void quantize_row_weighted(GgmlType type, const float* src, const float* importance, uint8_t* dst,
                           int64_t n_elements);

// Σ importance_i·(src_i − dequantized_i)² of a quantized row (double accumulation).
double weighted_squared_error(GgmlType type, const float* src, const float* importance,
                              const uint8_t* blocks, int64_t n_elements);

}  // namespace nibble::gguf
