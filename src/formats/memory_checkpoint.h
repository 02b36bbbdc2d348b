#pragma once
// A checkpoint whose tensors live in memory: models assembled in code (unit tests, fuzzers,
// benchmarks) go through the same loader and quantization resolution as files on disk.
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "formats/checkpoint.h"

namespace nibble {

class MemoryCheckpoint final : public Checkpoint {
 public:
  explicit MemoryCheckpoint(std::string source = "memory") : source_(std::move(source)) {}

  // Stores `bytes` under `name`; `type` is a safetensors dtype ("F32", "BF16", "I32", "U8", ...)
  // or any other tag the reader of the tensor understands. Replaces a tensor of the same name.
  void add(const std::string& name, const std::string& type, std::vector<int64_t> shape,
           std::vector<uint8_t> bytes);
  // The same with the bytes of `values` (e.g. int32 packed codes, uint16 f16 scales).
  template <typename T>
  void add(const std::string& name, const std::string& type, std::vector<int64_t> shape,
           const std::vector<T>& values) {
    std::vector<uint8_t> bytes(values.size() * sizeof(T));
    if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
    add(name, type, std::move(shape), std::move(bytes));
  }
  void add_f32(const std::string& name, std::vector<int64_t> shape,
               const std::vector<float>& values) {
    add(name, "F32", std::move(shape), values);
  }
  void remove(const std::string& name);
  // Changes the declared shape only: how a loader reacts to a wrong shape is what is tested.
  void reshape(const std::string& name, std::vector<int64_t> shape);

  std::string source() const override { return source_; }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const override;
  // Dense safetensors dtypes convert; any other type is an error naming the tensor.
  std::vector<float> load_f32(std::string_view name) const override;

 private:
  std::string source_;
  std::vector<CheckpointTensor> tensors_;
  // std::map nodes never move, so CheckpointTensor::data stays valid as tensors come and go.
  std::map<std::string, std::vector<uint8_t>, std::less<>> storage_;
};

}  // namespace nibble
