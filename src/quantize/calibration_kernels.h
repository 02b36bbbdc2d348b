#pragma once
// The dense inner kernels of calibration and GPTQ, each with a scalar reference:
// - the Gram matrix Σ xᵀx of a linear layer's inputs (GPTQ's Hessian), as a symmetric rank-k
//   update that computes only the lower triangle (half the flops of a general matmul);
// - GPTQ's lazy-batch update, a rank-B subtraction C −= Aᵀ·B in double, as a register-blocked
//   GEMM instead of one axpy per (column, block column) pair.
// The AVX2+FMA update is compiled with function target attributes (the library is built for
// the x86-64 baseline) and used whenever the engine's CPU kernels are not forced to scalar
// (NIBBLE_CPU_ISA=scalar selects the reference here too).
#include <cstdint>

namespace nibble::quantize {

// h[i·k + j] += Σ_t x[t·k + i]·x[t·k + j] for x[m, k] row-major. Each output sums the products
// of a chunk of 256 rows in f32 (fused multiply-adds, in row order), and the chunk's sums are
// added in double, so |error| ≤ 256·2⁻²⁴·Σ_t |x_ti·x_tj| (plus double rounding). Only the lower
// triangle is computed (it is mirrored); without AVX2 the double reference runs. Multithreaded:
// do not call from a ThreadPool job.
void accumulate_gram(const float* x, int64_t m, int64_t k, double* h);
// The same sums in double (for tests).
void accumulate_gram_reference(const float* x, int64_t m, int64_t k, double* h);

// c[r·ldc + n] −= Σ_d at[d·lda + r]·b[d·ldb + n] for r < rows, n < cols, d < depth (A is given
// transposed: GPTQ's factor rows are contiguous along r). Single-threaded; the caller splits
// rows over threads.
void subtract_product(double* c, int64_t ldc, const double* at, int64_t lda, const double* b,
                      int64_t ldb, int64_t rows, int64_t cols, int64_t depth);
void subtract_product_reference(double* c, int64_t ldc, const double* at, int64_t lda,
                                const double* b, int64_t ldb, int64_t rows, int64_t cols,
                                int64_t depth);

}  // namespace nibble::quantize
