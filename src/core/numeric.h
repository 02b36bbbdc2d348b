#pragma once
// Scalar conversions between f32 and the narrow float formats that checkpoints store.
// These are the reference conversions: kernels are tested against them.
#include <bit>
#include <cmath>
#include <cstdint>

namespace nibble {

inline float bf16_to_f32(uint16_t v) { return std::bit_cast<float>(uint32_t(v) << 16); }

// Round to nearest even, as torch does; NaN stays a quiet NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Subnormal or zero: value = mant * 2^-24.
    float v = std::ldexp(float(mant), -24);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

// Round to nearest even with overflow to infinity, matching numpy's astype(float16).
inline uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (u >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (u < 0x38800000u) {
    // Result is subnormal in f16: let the FPU round by adding a magic constant.
    float v = std::bit_cast<float>(u) + 0.5f;
    return uint16_t(sign | (std::bit_cast<uint32_t>(v) - 0x3f000000u));
  }
  const uint32_t mant_odd = (u >> 13) & 1u;
  u += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return uint16_t(sign | (u >> 13));
}

// OCP FP8 E4M3 ("fn": no infinities, 0x7f/0xff are NaN, max 448).
inline float fp8_e4m3_to_f32(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80u) << 24;
  const uint32_t exp = (v >> 3) & 0xfu;
  const uint32_t mant = v & 0x7u;
  if (exp == 15 && mant == 7) return std::bit_cast<float>(sign | 0x7fc00000u);
  if (exp == 0) {
    float r = std::ldexp(float(mant), -9);
    return std::bit_cast<float>(std::bit_cast<uint32_t>(r) | sign);
  }
  return std::bit_cast<float>(sign | ((exp + 120) << 23) | (mant << 20));
}

// OCP FP8 E5M2 (IEEE-like, has infinities).
inline float fp8_e5m2_to_f32(uint8_t v) { return f16_to_f32(uint16_t(v) << 8); }

}  // namespace nibble
