#include "core/dtype.h"

#include <array>
#include <cstring>

#include "core/error.h"
#include "core/numeric.h"

namespace nibble {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};

constexpr std::array<DTypeInfo, 12> kDTypes{{
    {DType::F64, "F64", 8},
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},
    {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
}};

template <typename T>
void convert_plain(const void* src, float* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, static_cast<const char*>(src) + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

size_t dtype_size(DType t) { return kDTypes[static_cast<size_t>(t)].size; }
std::string_view dtype_name(DType t) { return kDTypes[static_cast<size_t>(t)].name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& info : kDTypes)
    if (info.name == name) return info.type;
  return std::nullopt;
}

void convert_to_f32(DType t, const void* src, float* dst, size_t count) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32: std::memcpy(dst, src, count * 4); return;
    case DType::F64: convert_plain<double>(src, dst, count); return;
    case DType::I64: convert_plain<int64_t>(src, dst, count); return;
    case DType::I32: convert_plain<int32_t>(src, dst, count); return;
    case DType::I16: convert_plain<int16_t>(src, dst, count); return;
    case DType::I8: convert_plain<int8_t>(src, dst, count); return;
    case DType::U8:
    case DType::BOOL: convert_plain<uint8_t>(src, dst, count); return;
    case DType::F16:
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    case DType::F8_E4M3:
      for (size_t i = 0; i < count; ++i) dst[i] = fp8_e4m3_to_f32(bytes[i]);
      return;
    case DType::F8_E5M2:
      for (size_t i = 0; i < count; ++i) dst[i] = fp8_e5m2_to_f32(bytes[i]);
      return;
  }
  fail("convert_to_f32: unknown dtype {}", static_cast<int>(t));
}

}  // namespace nibble
