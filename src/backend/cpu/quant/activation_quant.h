#pragma once
// Activation quantization of the quantized linear layers: the one definition of how x is
// rounded (scalar; it runs once per call over x, not per weight, so it is not the hot path).
#include <cstdint>

#include "quant/scheme.h"

namespace nibble::cpu {

// True when `act` can feed the integer (a8) kernels: DynamicPerTokenInt8, or
// StaticPerTensorInt8 without a zero point (or a zero point of 0).
bool int8_kernel_activations(const quant::ActQuant& act);

// Int8 activations for the a8 kernels, one scale per row (token):
//  - DynamicPerTokenInt8 (and weight-only layers that opted into a8): s = max|x_row| / 127,
//    q = round_half_even(x / s) (an all-zero row has s = 0 and q = 0);
//  - StaticPerTensorInt8: s = input_scale, q = clamp(round_half_even(x / s), -127, 127).
// The division is the f32 division and the rounding the FPU's default (ties to even), as
// torch.round(x / s) does. -128 is never produced: the kernels' sign trick needs |q| <= 127
// (a static scale would give -128 only for an input below the calibrated range).
// Input rows have `cols` values; row r of xq has `k_padded` values, those past cols are 0.
// With `perm` (act-order), xq[r][k'] quantizes x[r][perm[k']]. With `xsum`, also writes
// xsum[r][g] = sum of xq[r][k] over k in [g * group, (g + 1) * group).
void quantize_activations_int8(const quant::ActQuant& act, const float* x, int64_t m_rows,
                               int64_t cols, const int32_t* perm, int64_t k_padded, int8_t* xq,
                               float* scales, int64_t group, int64_t n_groups, int32_t* xsum);

// Int8 activations with one scale per weight group, for weight-only layers that opted into the
// a8 kernels (llama.cpp feeds its quantized types the same way: Q4_0 against Q8_0 blocks of 32).
// Per row r and group g (of the packed, possibly permuted, K order): s = max|x over g| / 127,
// q = round_half_even(x / s) (an all-zero group has s = 0 and q = 0), group_scales[r][g] = s,
// scaled_sums[r][g] = s * (sum of q over g). Rows of xq as in quantize_activations_int8.
void quantize_activations_int8_per_group(const float* x, int64_t m_rows, int64_t cols,
                                         const int32_t* perm, int64_t k_padded, int64_t group,
                                         int64_t n_groups, int8_t* xq, float* group_scales,
                                         float* scaled_sums);

// Writes x quantized and dequantized per `act` (the values the scheme's kernels would compute
// with) to out[m_rows, cols]; ActQuantKind::None copies.
//  - int8 kinds: as above (static with a zero point z: q = clamp(round(x / s) + z, -128, 127),
//    x' = (q - z) * s);
//  - DynamicPerTokenFp8: s = max|x_row| / 448, x' = e4m3(x / s) * s;
//  - DynamicPerTokenGroupFp8: the same per `group_size` (default 128) channels of a row;
//  - StaticPerTensorFp8: s = input_scale, x' = e4m3(clamp(x / s, ±448)) * s;
//  - Nvfp4: global g = input_scale (absent: max|x_row| / (6 * 448)); per 16 channels
//    b = e4m3(max|x_block| / 6 / g), x' = e2m1(x / (b * g)) * (b * g).
// e4m3 / e2m1 round to nearest even and saturate (quant/reference/fp8.h).
void fake_quantize_activations(const quant::ActQuant& act, const float* x, int64_t m_rows,
                               int64_t cols, float* out);

}  // namespace nibble::cpu
