#pragma once
// GPTQ's factorisation for large Hessians: the Cholesky factor and the triangular inverse of
// linear_algebra.h, blocked. The diagonal blocks run the serial code; everything else is GEMMs
// (calibration_kernels.h's subtract_product) split over the thread pool. A Llama-3-8B down_proj
// Hessian (K = 14336) is ~2·10¹² flops: minutes of serial dot products.
//
// inverse_upper_cholesky_auto keeps the serial code below kBlockedFrom columns, so the results of
// every model quantized before (SmolLM2-sized Hessians) stay the same to the bit. Not to be called
// from a ThreadPool job (the GEMMs use the pool).
#include <cstdint>
#include <vector>

namespace nibble::quantize {

inline constexpr int64_t kBlockedFrom = 2048;

// As cholesky_lower_inplace / invert_lower_inplace, in blocks of `block` rows.
bool cholesky_lower_blocked(std::vector<double>& a, int64_t n, int64_t block);
void invert_lower_blocked(std::vector<double>& l, int64_t n, int64_t block);

// inverse_upper_cholesky, blocked from kBlockedFrom columns on (blocks of 128).
bool inverse_upper_cholesky_auto(const std::vector<double>& h, int64_t n, std::vector<double>& u);

}  // namespace nibble::quantize
