#pragma once
// Checked access to the on-disk tensors of one quantized linear layer: every failure names the
// checkpoint, the tensor and what was expected.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "formats/checkpoint.h"
#include "quant/scheme.h"

namespace nibble::quant {

class LayerTensors {
 public:
  LayerTensors(const Checkpoint& checkpoint, std::string prefix, std::string_view method)
      : ckpt_(checkpoint), prefix_(std::move(prefix)), method_(method) {}

  const std::string& prefix() const { return prefix_; }
  std::string name(std::string_view suffix) const { return prefix_ + "." + std::string(suffix); }
  const CheckpointTensor* find(std::string_view suffix) const { return ckpt_.find(name(suffix)); }
  // Missing tensor → Error naming the layer, the method and the tensor.
  const CheckpointTensor& require(std::string_view suffix) const;
  // `types` are safetensors dtype names ("I32", "F16", ...).
  void check_type(const CheckpointTensor& t, std::initializer_list<std::string_view> types) const;
  void check_rank(const CheckpointTensor& t, size_t rank) const;
  void check_shape(const CheckpointTensor& t, const std::vector<int64_t>& shape) const;
  int64_t numel(const CheckpointTensor& t) const;

  // Values of any float/int tensor as f32 (through Checkpoint::load_f32).
  std::vector<float> floats(const CheckpointTensor& t) const;
  // Raw I32 / I64 / I8 values as int32 (I64 values must fit).
  std::vector<int32_t> ints(const CheckpointTensor& t) const;
  // Pointer to the data of an I32 tensor (packed words), checked against its byte size.
  const uint8_t* words(const CheckpointTensor& t) const;
  ScaleDType scale_dtype(const CheckpointTensor& t) const;
  // A scalar tensor ([] or one element) as f32.
  float scalar(const CheckpointTensor& t) const;

  template <typename... Args>
  [[noreturn]] void fail_layer(fmt::format_string<Args...> format, Args&&... args) const;

 private:
  const Checkpoint& ckpt_;
  std::string prefix_;
  std::string_view method_;
};

template <typename... Args>
void LayerTensors::fail_layer(fmt::format_string<Args...> format, Args&&... args) const {
  throw Error(fmt::format("{}: {} layer '{}': {}", ckpt_.source(), method_, prefix_,
                          fmt::format(format, std::forward<Args>(args)...)));
}

}  // namespace nibble::quant
