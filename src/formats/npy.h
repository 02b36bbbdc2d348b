#pragma once
// Minimal NumPy .npy (v1.0) writer: the exchange format of the parity tests.
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace nibble {

void write_npy_f32(const std::filesystem::path& path, std::span<const float> data,
                   const std::vector<int64_t>& shape);
void write_npy_i32(const std::filesystem::path& path, std::span<const int32_t> data,
                   const std::vector<int64_t>& shape);

}  // namespace nibble
