#pragma once
// Element types of stored tensors (safetensors dtypes; GGUF maps its plain types onto these).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace nibble {

enum class DType : uint8_t { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
// The safetensors header spelling ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);

// Converts `count` elements of type `t` at `src` into f32 (integers convert by value).
void convert_to_f32(DType t, const void* src, float* dst, size_t count);

}  // namespace nibble
