#pragma once
// The double-precision inner loops of GPTQ and its Cholesky factorisation. They are compiled
// twice (x86-64 baseline and AVX2) and the loader picks the clone the CPU runs
// (GCC/Clang target_clones), since the library itself is built for the baseline.
#include <cstdint>

namespace nibble::quantize {

// Σ a[i]·b[i].
double dot(const double* a, const double* b, int64_t n);
// y[i] −= c·x[i].
void sub_scaled(double* y, const double* x, double c, int64_t n);

}  // namespace nibble::quantize
