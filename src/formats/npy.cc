#include "formats/npy.h"

#include <string>

#include "core/atomic_file.h"
#include "core/error.h"

#include <fmt/ranges.h>

namespace nibble {
namespace {

void write_npy(const std::filesystem::path& path, const void* data, size_t nbytes,
               const char* descr, const std::vector<int64_t>& shape) {
  // Python tuple syntax: "(3,)" for one dimension, "(3, 4)" for more.
  std::string dims = fmt::format("{}", fmt::join(shape, ", "));
  if (shape.size() == 1) dims += ",";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  AtomicFileWriter out(path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t length = static_cast<uint16_t>(header.size());
  const uint8_t le[2] = {uint8_t(length & 0xff), uint8_t(length >> 8)};
  out.write(le, 2);
  out.write(header);
  out.write(data, nbytes);
  out.commit();
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

void write_npy_f32(const std::filesystem::path& path, std::span<const float> data,
                   const std::vector<int64_t>& shape) {
  NIBBLE_CHECK(product(shape) == static_cast<int64_t>(data.size()),
               "{}: npy shape does not match {} elements", path.string(), data.size());
  write_npy(path, data.data(), data.size_bytes(), "<f4", shape);
}

void write_npy_i32(const std::filesystem::path& path, std::span<const int32_t> data,
                   const std::vector<int64_t>& shape) {
  NIBBLE_CHECK(product(shape) == static_cast<int64_t>(data.size()),
               "{}: npy shape does not match {} elements", path.string(), data.size());
  write_npy(path, data.data(), data.size_bytes(), "<i4", shape);
}

}  // namespace nibble
