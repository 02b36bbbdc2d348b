#include "quant/reference/fp8.h"

#include <bit>
#include <cmath>

#include "quant/types.h"

namespace nibble::quant {

uint8_t f32_to_fp8_e4m3(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (std::isnan(value)) return sign | 0x7f;
  const float magnitude = std::fabs(value);
  if (magnitude >= 448.0f) return sign | 0x7e;
  if (magnitude < 0.015625f) {
    // Subnormal range (below 2^-6): steps of 2^-9; multiplying by 512 is exact, and
    // nearbyint rounds ties to even. 8 steps is the smallest normal (code 0x08), as it should be.
    return sign | static_cast<uint8_t>(std::nearbyint(magnitude * 512.0f));
  }
  const uint32_t mu = std::bit_cast<uint32_t>(magnitude);
  const uint32_t exponent = (mu >> 23) - 120;  // rebias 127 -> 7
  const uint32_t mantissa = mu & 0x7fffffu;
  uint32_t code = (exponent << 3) | (mantissa >> 20);
  const uint32_t rest = mantissa & 0xfffffu;
  if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;  // may carry into exponent
  if (code > 0x7e) code = 0x7e;
  return sign | static_cast<uint8_t>(code);
}

uint8_t f32_to_fp4_e2m1(float value) {
  const uint8_t sign = std::signbit(value) ? 8 : 0;
  const float magnitude = std::fabs(value);
  if (std::isnan(value)) return sign | 7;
  // Midpoints between neighbours of the grid; at a midpoint the code with an even mantissa
  // (even code) wins.
  uint8_t best = 0;
  for (uint8_t c = 1; c < 8; ++c) {
    const float mid = 0.5f * (kE2M1Values[c - 1] + kE2M1Values[c]);
    if (magnitude > mid || (magnitude == mid && (c % 2) == 0)) best = c;
  }
  return sign | best;
}

}  // namespace nibble::quant
