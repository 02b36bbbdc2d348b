#pragma once
// The dense linear algebra GPTQ needs, in double: Cholesky factorisation and the upper Cholesky
// factor of an inverse. Matrices are square, row-major, n x n.
#include <cstdint>
#include <vector>

namespace nibble::quantize {

// Lower-triangular L with A = L·Lᵀ, in place (the strict upper triangle is zeroed). Returns false
// when A is not positive definite (a pivot ≤ 0), leaving A partly overwritten.
bool cholesky_lower_inplace(std::vector<double>& a, int64_t n);

// Inverse of a lower-triangular matrix (lower-triangular), in place.
void invert_lower_inplace(std::vector<double>& l, int64_t n);

// The upper-triangular U with H⁻¹ = Uᵀ·U (torch: cholesky(cholesky_inverse(cholesky(H)),
// upper=True)), computed with one factorisation instead of three: with J the reversal
// permutation and J·H·J = M·Mᵀ, U = J·M⁻¹·J (upper because M⁻¹ is lower; uniqueness of the
// Cholesky factor with a positive diagonal makes it the same U). Returns false when H is not
// positive definite.
bool inverse_upper_cholesky(const std::vector<double>& h, int64_t n, std::vector<double>& u);

// out[i][j] = m[n−1−i][n−1−j] (J·M·J, J the reversal permutation): the two ends of
// inverse_upper_cholesky.
std::vector<double> reversed(const std::vector<double>& m, int64_t n);

}  // namespace nibble::quantize
