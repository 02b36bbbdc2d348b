#pragma once
// The table of element and scale types of QuantizedTensor: names, widths, and the decoding of
// the float code types (e4m3, e5m2, e2m1, nf4).
#include <cstdint>
#include <optional>
#include <string_view>

#include "quant/scheme.h"

namespace nibble::quant {

struct ElemTypeInfo {
  ElemType type;
  std::string_view name;  // "int4", "uint4", "fp8_e4m3", ...
  int bits;               // code width; 0 for GgufBlock (sized by its block type)
  bool signed_int;
  bool unsigned_int;
  bool is_float;
};

const ElemTypeInfo& elem_info(ElemType type);
inline int elem_bits(ElemType type) { return elem_info(type).bits; }
inline std::string_view elem_name(ElemType type) { return elem_info(type).name; }
std::optional<ElemType> elem_from_name(std::string_view name);

// Int2..Int8 / UInt2..UInt8 for bits in {2, 3, 4, 8}; Error otherwise (`what` names the field).
ElemType signed_int_type(int bits, std::string_view what);
ElemType unsigned_int_type(int bits, std::string_view what);

std::string_view scale_dtype_name(ScaleDType type);
std::string_view granularity_name(ScaleGranularity g);

// The real value of one code of a float element type (Fp8E4M3, Fp8E5M2, Fp4E2M1, Nf4).
float decode_float_code(ElemType type, uint32_t code);
// Sign-extends a b-bit two's-complement code.
inline int32_t sign_extend(uint32_t code, int bits) {
  const uint32_t sign = 1u << (bits - 1);
  return static_cast<int32_t>((code ^ sign)) - static_cast<int32_t>(sign);
}

// FP4 E2M1 magnitudes of codes 0..7 (bit 3 is the sign).
inline constexpr float kE2M1Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// bitsandbytes' NF4 table (bitsandbytes/functional.py get_4bit_type("nf4")), as float32.
inline constexpr float kNf4Values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

}  // namespace nibble::quant
