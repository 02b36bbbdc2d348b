#pragma once
// Scalar reference kernels: the truth every SIMD kernel is tested against, and the fallback
// when the CPU has neither AVX2 nor AVX-512 (or NIBBLE_CPU_ISA=scalar). Accumulates in double
// so that it is a better answer than any kernel, not merely a different one.
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu {

const KernelTable& reference_kernels();

}  // namespace nibble::cpu
