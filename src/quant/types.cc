#include "quant/types.h"

#include <cmath>

#include "core/error.h"
#include "core/numeric.h"

namespace nibble::quant {
namespace {

constexpr ElemTypeInfo kElemTypes[] = {
    {ElemType::Int2, "int2", 2, true, false, false},
    {ElemType::Int3, "int3", 3, true, false, false},
    {ElemType::Int4, "int4", 4, true, false, false},
    {ElemType::Int8, "int8", 8, true, false, false},
    {ElemType::UInt2, "uint2", 2, false, true, false},
    {ElemType::UInt3, "uint3", 3, false, true, false},
    {ElemType::UInt4, "uint4", 4, false, true, false},
    {ElemType::UInt8, "uint8", 8, false, true, false},
    {ElemType::Fp8E4M3, "fp8_e4m3", 8, false, false, true},
    {ElemType::Fp8E5M2, "fp8_e5m2", 8, false, false, true},
    {ElemType::Fp4E2M1, "fp4_e2m1", 4, false, false, true},
    {ElemType::Nf4, "nf4", 4, false, false, true},
    {ElemType::GgufBlock, "gguf", 0, false, false, false},
};

}  // namespace

const ElemTypeInfo& elem_info(ElemType type) {
  for (const auto& info : kElemTypes)
    if (info.type == type) return info;
  fail("quant: unknown element type {}", static_cast<int>(type));
}

std::optional<ElemType> elem_from_name(std::string_view name) {
  for (const auto& info : kElemTypes)
    if (info.name == name) return info.type;
  return std::nullopt;
}

ElemType signed_int_type(int bits, std::string_view what) {
  switch (bits) {
    case 2: return ElemType::Int2;
    case 3: return ElemType::Int3;
    case 4: return ElemType::Int4;
    case 8: return ElemType::Int8;
    default: fail("{}: {} bits is not supported (expected 2, 3, 4 or 8)", what, bits);
  }
}

ElemType unsigned_int_type(int bits, std::string_view what) {
  switch (bits) {
    case 2: return ElemType::UInt2;
    case 3: return ElemType::UInt3;
    case 4: return ElemType::UInt4;
    case 8: return ElemType::UInt8;
    default: fail("{}: {} bits is not supported (expected 2, 3, 4 or 8)", what, bits);
  }
}

std::string_view scale_dtype_name(ScaleDType type) {
  switch (type) {
    case ScaleDType::F32: return "f32";
    case ScaleDType::F16: return "f16";
    case ScaleDType::BF16: return "bf16";
    case ScaleDType::E4M3: return "e4m3";
    case ScaleDType::UE8M0: return "ue8m0";
  }
  return "?";
}

std::string_view granularity_name(ScaleGranularity g) {
  switch (g) {
    case ScaleGranularity::None: return "none";
    case ScaleGranularity::PerTensor: return "per-tensor";
    case ScaleGranularity::PerChannel: return "per-channel";
    case ScaleGranularity::PerGroup: return "per-group";
    case ScaleGranularity::Block2D: return "block";
  }
  return "?";
}

float decode_float_code(ElemType type, uint32_t code) {
  switch (type) {
    case ElemType::Fp8E4M3: return fp8_e4m3_to_f32(static_cast<uint8_t>(code));
    case ElemType::Fp8E5M2: return fp8_e5m2_to_f32(static_cast<uint8_t>(code));
    case ElemType::Fp4E2M1: {
      const float magnitude = kE2M1Values[code & 7u];
      return (code & 8u) ? -magnitude : magnitude;
    }
    case ElemType::Nf4: return kNf4Values[code & 15u];
    default: fail("quant: {} is not a float code type", elem_name(type));
  }
}

ScaleGranularity QuantizedTensor::granularity() const {
  if (elem == ElemType::GgufBlock || scales.empty()) return ScaleGranularity::None;
  if (scale_rows == 1 && scale_cols == 1) return ScaleGranularity::PerTensor;
  if (scale_block_rows == 1 && scale_cols == 1) return ScaleGranularity::PerChannel;
  if (scale_block_rows == 1) return ScaleGranularity::PerGroup;
  return ScaleGranularity::Block2D;
}

}  // namespace nibble::quant
