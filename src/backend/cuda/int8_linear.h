#pragma once
// W8A8 int8 linear layers (SmoothQuant checkpoints, nibble's --quantization w8a8_int8): int8
// weights with one scale per output row (or per tensor), activations quantized per token on the
// fly (scale = max|x| / 127, code = clamp(round(x / scale), ±127), as the CPU kernels do), the
// product by cuBLASLt's int8 GEMM into exact int32 sums, then y = bf16(acc · x_scale · w_scale).
// A SmoothQuant checkpoint's smoothing is already folded into its weights and the preceding
// norm, so it needs nothing more here.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/lt_gemm.h"
#include "quant/scheme.h"

namespace nibble::cuda {

struct Int8Weight {
  int64_t rows = 0;         // N
  int64_t cols = 0;         // K
  int64_t padded_cols = 0;  // K rounded up to 16, zero codes past K (cuBLASLt's int8 alignment)
  int64_t padded_rows = 0;  // N rounded up to 16
  DeviceBuffer codes;       // int8 [padded_rows][padded_cols]
  DeviceBuffer scales;      // f32 [padded_rows] (a per-tensor scale repeated; 0 past N)
};

// elem Int8, no zero points, a per-tensor or per-channel scale; anything else is an Error naming
// `what`.
Int8Weight prepare_int8_weight(const quant::QuantizedTensor& weight, const char* what);

struct Int8Workspace {
  DeviceBuffer x_codes;   // int8 [M][padded_cols]
  DeviceBuffer x_scales;  // f32 [M]
  DeviceBuffer acc;       // int32 [M][padded_rows]
};

// x (bf16 [M][K]) → codes (int8 [M][ld_out], zero past K) and scales[M] = max|x_m| / 127; an
// all-zero row gets scale 0 and zero codes.
void quantize_int8_per_token(const void* x, int64_t m, int64_t k, int64_t ld_out, int8_t* codes,
                             float* scales, cudaStream_t stream);

// y[M][N] (bf16) = x · dequant(W)ᵀ with x quantized per token.
void int8_linear(LtGemm& lt, const Int8Weight& weight, const void* x, int64_t m, void* y,
                 Int8Workspace& workspace, cudaStream_t stream);

}  // namespace nibble::cuda
