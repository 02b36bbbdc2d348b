#pragma once
// FP8 W8A8 linear layers (e4m3 weights and activations, bf16 out) through cuBLASLt.
//
// Weight scales: per-tensor or per-channel (one per output row). Activation scales: static
// per-tensor (the checkpoint's input_scale) or dynamic per-token (amax / 448 of each row, computed
// by quantize_fp8_per_token). Non-scalar scales go to cuBLASLt as outer-vector scales (CUDA 12.9+);
// where it has no algorithm for them, the GEMM runs unscaled into bf16 and a small kernel scales
// the output by x_scale[m] · w_scale[n] (one extra bf16 rounding).
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/lt_gemm.h"
#include "quant/scheme.h"

namespace nibble::cuda {

struct Fp8Weight {
  int64_t rows = 0;         // N
  int64_t cols = 0;         // K
  int64_t padded_cols = 0;  // K rounded up to 16 (cuBLASLt's fp8 alignment), zero codes past K
  int64_t padded_rows = 0;  // N rounded up to 16: cuBLASLt has no fp8 algorithm for odd N
  bool per_channel = false;
  DeviceBuffer codes;   // e4m3 [padded_rows][padded_cols]
  DeviceBuffer scales;  // f32: one, or one per padded row (1 past N)
};

// elem Fp8E4M3 with a per-tensor or per-channel scale; block scales are an Error naming `what`.
Fp8Weight prepare_fp8_weight(const quant::QuantizedTensor& weight, const char* what);

enum class Fp8ActMode : uint8_t { StaticPerTensor, DynamicPerToken };

struct Fp8Options {
  Fp8ActMode act = Fp8ActMode::DynamicPerToken;
  float input_scale = 1.0f;  // StaticPerTensor
  bool fast_accum = false;   // cuBLASLt's fast fp8 accumulation
};

struct Fp8Workspace {
  DeviceBuffer x_codes;   // e4m3 [M][padded_cols]
  DeviceBuffer x_scales;  // f32 [M] (or one for static)
  DeviceBuffer y_padded;  // bf16 [M][padded_rows] when N is not a multiple of 16
};

// x (bf16 [M][K]) → codes (e4m3 [M][ld_out], zero past K) and scales[M] = max|x_m| / 448 (1 for
// an all-zero row); code = e4m3(x / scale), round to nearest even, saturating at ±448.
void quantize_fp8_per_token(const void* x, int64_t m, int64_t k, int64_t ld_out, uint8_t* codes,
                            float* scales, cudaStream_t stream);
// code = e4m3(x / *scale) with one device-side scale.
void quantize_fp8_static(const void* x, int64_t m, int64_t k, int64_t ld_out, const float* scale,
                         uint8_t* codes, cudaStream_t stream);

// y[M][N] = (x_codes · Wᵀ) ⊙ (x_scale ⊗ w_scale) on already-quantized activations (rows of
// weight.padded_cols). `x_scale` holds one value (per-tensor) or M. Returns true when cuBLASLt
// applied the scales itself, false when the fallback scaling kernel ran.
bool fp8_gemm(LtGemm& lt, const Fp8Weight& weight, const uint8_t* x_codes, const float* x_scale,
              bool x_per_token, int64_t m, void* y, bool fast_accum, Fp8Workspace& workspace,
              cudaStream_t stream);

// Quantizes x as `options` say, then fp8_gemm.
void fp8_linear(LtGemm& lt, const Fp8Weight& weight, const void* x, int64_t m, void* y,
                Fp8Workspace& workspace, const Fp8Options& options, cudaStream_t stream);

}  // namespace nibble::cuda
