#pragma once
// GGUF v3 writer: metadata of every value type (arrays included) and tensors of any ggml
// type from raw bytes, laid out the way ggml's loader demands (data in tensor-info order,
// each tensor padded to general.alignment). The file appears atomically on write().
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "formats/gguf/gguf_file.h"

namespace nibble::gguf {

class GgufWriter {
 public:
  // Produces a tensor's bytes when write() reaches it, so a converter need not hold every
  // quantized tensor in memory at once.
  using TensorProducer = std::function<std::vector<uint8_t>()>;

  explicit GgufWriter(std::filesystem::path path);

  // Adds a metadata entry; Error on a duplicate key or a value that does not fit its type.
  // Adding "general.alignment" (UINT32, power of two) also sets the data alignment.
  void add(std::string key, MetaValue value);
  void add_string(std::string key, std::string value);
  void add_uint32(std::string key, uint32_t value);
  void add_int32(std::string key, int32_t value);
  void add_uint64(std::string key, uint64_t value);
  void add_int64(std::string key, int64_t value);
  void add_float32(std::string key, float value);
  void add_float64(std::string key, double value);
  void add_bool(std::string key, bool value);
  void add_string_array(std::string key, const std::vector<std::string>& values);
  void add_int32_array(std::string key, const std::vector<int32_t>& values);
  void add_float32_array(std::string key, const std::vector<float>& values);
  void set_alignment(uint32_t alignment);  // default 32; written as general.alignment

  // `shape` is in PyTorch order (outermost first); the file stores it reversed as ne.
  // The byte size must be that of `shape` elements of `type` (Error otherwise).
  void add_tensor(std::string name, GgmlType type, std::vector<int64_t> shape,
                  std::vector<uint8_t> data);
  // The caller keeps `data` alive until write() returns.
  void add_tensor_view(std::string name, GgmlType type, std::vector<int64_t> shape,
                       std::span<const uint8_t> data);
  void add_tensor_lazy(std::string name, GgmlType type, std::vector<int64_t> shape,
                       TensorProducer producer);

  // Writes the whole file through a temporary file and renames it into place.
  void write();

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    uint64_t nbytes = 0;
    uint64_t offset = 0;
    std::span<const uint8_t> view;
    std::vector<uint8_t> owned;
    TensorProducer producer;
  };
  PendingTensor& new_tensor(std::string name, GgmlType type, std::vector<int64_t> shape);

  std::filesystem::path path_;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace nibble::gguf
