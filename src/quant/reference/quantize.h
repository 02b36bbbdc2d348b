#pragma once
// Reference round-to-nearest quantizers (the simple, calibration-free methods). They produce
// QuantizedTensors that loaders' outputs and exporters' inputs can be compared with.
#include <cstdint>
#include <span>

#include "quant/scheme.h"

namespace nibble::quant {

struct RtnIntOptions {
  int bits = 4;              // 2, 3, 4 or 8
  int64_t group_size = 128;  // -1: one group per row (per-channel)
  bool symmetric = true;
};

// Symmetric (compressed-tensors' convention): scale = amax / ((qmax - qmin) / 2), i.e. amax/7.5
// for int4, q = clamp(round(w/s), qmin, qmax), signed codes. Asymmetric: scale = (max - min) / (2^b
// - 1) with min ≤ 0 ≤ max, zero = clamp(round(-min / scale), 0, 2^b - 1), q = clamp(round(w/s) +
// zero, 0, 2^b - 1), unsigned codes with integer zeros. round() is half-to-even, as torch.round.
QuantizedTensor quantize_rtn_int(std::span<const float> w, int64_t rows, int64_t cols,
                                 const RtnIntOptions& options);

enum class Fp8Granularity : uint8_t { PerTensor, PerChannel, Block };

// scale = amax / 448 per tensor, row, or [block_rows, block_cols] block (an all-zero block
// gets scale 1); q = e4m3(clamp(w / scale, ±448)).
QuantizedTensor quantize_fp8_e4m3(std::span<const float> w, int64_t rows, int64_t cols,
                                  Fp8Granularity granularity, int64_t block_rows = 128,
                                  int64_t block_cols = 128);

}  // namespace nibble::quant
