#pragma once
// Reference encoders for the narrow float types (the decoders are in core/numeric.h and
// quant/types.h). Round to nearest, ties to even, as torch's casts do.
#include <cstdint>

namespace nibble::quant {

// Saturates to ±448 (torch would give NaN past 464; every quantizer clamps before the cast).
uint8_t f32_to_fp8_e4m3(float value);
// Sign in bit 3; saturates to ±6; ties to the even mantissa (0.25 → 0, 0.75 → 1.0, 2.5 → 2.0).
uint8_t f32_to_fp4_e2m1(float value);

}  // namespace nibble::quant
