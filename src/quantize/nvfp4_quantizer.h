#pragma once
// NVFP4 weights as ModelOpt produces them: FP4 E2M1 codes in blocks of 16 along K, one FP8 E4M3
// scale per block, and a per-tensor f32 second-level scale weight_scale_2 = amax / (6·448).
// Layers that run fused (q/k/v, gate/up) must share weight_scale_2 (vLLM takes one for the
// fused layer), so the caller passes the amax over the whole group.
#include <cstdint>
#include <span>

#include "quant/scheme.h"

namespace nibble::quantize {

// block scale = e4m3(amax_block / (6·weight_scale_2)) (a zero block gets 1), code =
// e2m1(w / (block scale · weight_scale_2)); `global_amax` ≥ max|w| of this weight.
quant::QuantizedTensor quantize_nvfp4(std::span<const float> w, int64_t rows, int64_t cols,
                                      float global_amax);

}  // namespace nibble::quantize
