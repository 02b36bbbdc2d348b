#pragma once
// Reference quantizers of the online methods whose arithmetic is not plain f32 RTN: torchao's
// (which runs torch ops on the model's bf16 weights, so every intermediate is rounded to bf16)
// and bitsandbytes' 4-bit blockwise quantizer. Each returns the canonical QuantizedTensor.
#include <cstdint>
#include <span>
#include <vector>

#include "quant/scheme.h"

namespace nibble::quant {

// The dtype torch computes in: the weight's. SGLang runs bf16 checkpoints in bf16, where every
// elementwise op result (a - b, a / b, a * b) is rounded to bf16 before the next one.
enum class TorchDType : uint8_t { F32, BF16 };
// x rounded to `dtype` (round to nearest even for bf16; identity for f32).
float torch_round(float x, TorchDType dtype);

// torchao Int8WeightOnlyConfig / Int8DynamicActivationInt8WeightConfig weight: symmetric per
// row over [-128, 127], scale = amax / 127.5 (in `dtype`, at least f32 eps),
// q = clamp(round(w · (1 / scale)), -128, 127) with the reciprocal and the product each rounded
// to `dtype`. Int8 codes, per-row scales tagged with `dtype`.
QuantizedTensor quantize_torchao_int8(std::span<const float> w, int64_t rows, int64_t cols,
                                      TorchDType dtype);

// torchao Int4WeightOnlyConfig(group_size) with the tinygemm layout: asymmetric uint4 per group
// of `group_size` along K, zero point in the float domain, zero not preserved:
//   scale = max((max − min) / 15, 1e-6), zero = min + 8·scale (bf16),
//   q = clamp(round((w − (zero − 8·scale)) / scale), 0, 15), w ≈ (q − 8)·scale + zero.
// Stored as UInt4 codes with ZeroKind::Float: float_zero = zero − 8·scale (exact in f32), so
// dequantize() gives (q − 8)·scale + zero. cols % group_size must be 0.
QuantizedTensor quantize_torchao_int4(std::span<const float> w, int64_t rows, int64_t cols,
                                      int64_t group_size, TorchDType dtype);

// torchao Float8WeightOnlyConfig / Float8DynamicActivationFloat8WeightConfig weight: e4m3 with
// scale = amax / 448 computed in `dtype` and kept as f32, per row or per tensor;
// q = e4m3(clamp(f32(w) / scale, ±448)). An all-zero row (or tensor) gets scale 1.
QuantizedTensor quantize_torchao_fp8(std::span<const float> w, int64_t rows, int64_t cols,
                                     bool per_tensor, TorchDType dtype);

// bitsandbytes' signed 8-bit "dynamic" code (create_dynamic_map(signed=True)): 256 sorted
// values in [-1, 1], the nested-quantization code of absmax.
const std::vector<float>& bnb_dynamic_map();

struct Bnb4bitOptions {
  bool fp4 = false;                 // quant_type "fp4" instead of "nf4"
  int64_t blocksize = 64;           // values per absmax, over the row-major flattened weight
  bool compress_statistics = true;  // nested (double) quantization of absmax, blocks of 256
};

// bitsandbytes quantize_4bit: absmax per block, code = nearest table entry to w / absmax (the
// first on a tie, as torch.argmin); with compress_statistics the absmax are stored as 8-bit
// dynamic codes of (absmax − mean) per 256 blocks, so the effective scales are
// code2[q] · absmax2 + mean. NF4 gives ElemType::Nf4 codes; FP4 (bitsandbytes' own 4-bit float,
// not E2M1) gives Fp8E4M3 codes of 12 × the table value with scales absmax / 12.
// cols % blocksize must be 0 (blocks then never straddle rows).
QuantizedTensor quantize_bnb_4bit(std::span<const float> w, int64_t rows, int64_t cols,
                                  const Bnb4bitOptions& options);

// bitsandbytes' FP4 table (get_4bit_type("fp4")): sign in bit 3, magnitudes
// {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12.
inline constexpr float kBnbFp4Magnitudes12[8] = {0.0f, 0.0625f, 8.0f, 12.0f,
                                                 4.0f, 6.0f,    2.0f, 3.0f};

}  // namespace nibble::quant
