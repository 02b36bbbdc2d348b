#pragma once
// A set of named tensors from one model checkpoint (safetensors shards or a GGUF file),
// seen through one interface so the model code does not care where weights came from.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

struct CheckpointTensor {
  std::string name;
  std::string type;               // "BF16", "F32", ... or a GGUF block type such as "Q4_1"
  std::vector<int64_t> shape;     // PyTorch order: outermost dimension first
  uint64_t nbytes = 0;            // bytes stored on disk
  const uint8_t* data = nullptr;  // points into the memory-mapped file
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;
  // Human-readable origin (a directory or file path) used in error messages.
  virtual std::string source() const = 0;
  virtual const std::vector<CheckpointTensor>& tensors() const = 0;
  // nullptr when absent.
  virtual const CheckpointTensor* find(std::string_view name) const = 0;
  // Dequantizes/converts a tensor to f32, row-major in `shape` order.
  // Throws nibble::Error naming the source and tensor when it is missing or malformed.
  virtual std::vector<float> load_f32(std::string_view name) const = 0;
};

}  // namespace nibble
