#pragma once
// safetensors reader. The whole header is validated before any tensor is exposed: header
// length against the file size, JSON syntax (duplicate keys rejected, nesting bounded),
// every tensor's dtype, shape and byte size, and that the tensors tile the data section
// exactly (no gap, no overlap, no trailing bytes). A hostile file gives an nibble::Error
// naming the file and the tensor or field, never an out-of-bounds read.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace nibble {

// The reference parser's MAX_HEADER_SIZE; a larger length field is treated as hostile.
inline constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;
// Names are used as C strings and in messages; real checkpoints stay far below this.
inline constexpr size_t kSafetensorsMaxNameLength = 1024;

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;     // row-major, outermost first; empty for a scalar
  uint64_t offset = 0;            // relative to the start of the data section
  uint64_t nbytes = 0;            // product(shape) * dtype_size(dtype)
  const uint8_t* data = nullptr;  // into the mapping; valid while the file object lives
  uint64_t num_elements() const;
  std::span<const uint8_t> bytes() const { return {data, static_cast<size_t>(nbytes)}; }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws nibble::Error naming the file and the problem.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  // Validates a file image held in memory; `bytes` must outlive the returned object.
  // `source` names the image in error messages (used by tests and fuzzers).
  static std::shared_ptr<SafetensorsFile> from_memory(std::span<const uint8_t> bytes,
                                                      std::string source);

  const std::string& source() const { return source_; }
  // Tensors in file (data offset) order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const SafetensorsTensor* find(std::string_view name) const;
  // The "__metadata__" object (string -> string); empty when absent.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Byte length of the JSON header (without the 8-byte length prefix).
  uint64_t header_size() const { return header_size_; }

 private:
  SafetensorsFile() = default;
  void parse(std::span<const uint8_t> bytes);

  std::string source_;
  std::shared_ptr<MappedFile> mapping_;  // null for from_memory
  std::vector<SafetensorsTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t header_size_ = 0;
};

}  // namespace nibble
