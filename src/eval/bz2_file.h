#pragma once
// Reads a whole .bz2-compressed file into memory through libbz2 (HellaSwag ships as .bz2).
#include <filesystem>
#include <string>

namespace nibble::eval {

// Throws nibble::Error naming the file when it is unreadable, corrupt or would unpack to more
// than `max_bytes`.
std::string read_bz2_file(const std::filesystem::path& path, size_t max_bytes = size_t(1) << 30);

// Reads a file, unpacking it when its name ends in .bz2.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace nibble::eval
