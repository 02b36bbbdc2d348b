#pragma once
// safetensors writer. Output follows the reference writer's conventions so other tools load it:
// "__metadata__" first with {"format": "pt"} (transformers refuses other formats), tensors
// ordered by descending dtype alignment then name, offsets contiguous from 0, and the header
// padded with spaces to a multiple of 8 so every tensor starts 8-byte aligned. The file is
// written through AtomicFileWriter: it is either complete or absent.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace nibble {

class AtomicFileWriter;

struct SafetensorsTensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;  // product(shape) * dtype_size(dtype); throws on overflow
};

struct SafetensorsTensorData {
  SafetensorsTensorSpec spec;
  std::span<const uint8_t> data;  // exactly spec.nbytes() bytes; must stay valid during the write
};

// Streams a file whose tensor list is known up front, so an exporter can produce one tensor at
// a time without holding the whole model in memory.
class SafetensorsWriter {
 public:
  // Validates the specs (unique non-empty names, non-negative shapes, no size overflow) and
  // writes the header. `metadata` is written with "format" forced to "pt".
  SafetensorsWriter(std::filesystem::path path, std::vector<SafetensorsTensorSpec> specs,
                    std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The order in which tensors must be written.
  const std::vector<SafetensorsTensorSpec>& order() const { return specs_; }
  // Writes the next tensor; `name` must be order()[i] for the i-th call and `bytes` its size.
  void write(std::string_view name, std::span<const uint8_t> bytes);
  // Requires every tensor written; then flushes and renames the file into place.
  void commit();

 private:
  std::filesystem::path path_;
  std::vector<SafetensorsTensorSpec> specs_;
  size_t next_ = 0;
  std::unique_ptr<AtomicFileWriter> out_;
};

// Writes all tensors at once (any input order; the file order is the canonical one).
void write_safetensors(const std::filesystem::path& path,
                       std::span<const SafetensorsTensorData> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace nibble
