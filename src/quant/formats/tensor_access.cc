#include "quant/formats/tensor_access.h"

#include <fmt/ranges.h>

#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"

namespace nibble::quant {

const CheckpointTensor& LayerTensors::require(std::string_view suffix) const {
  const CheckpointTensor* t = find(suffix);
  if (t == nullptr) fail_layer("missing tensor '{}'", name(suffix));
  return *t;
}

void LayerTensors::check_type(const CheckpointTensor& t,
                              std::initializer_list<std::string_view> types) const {
  for (std::string_view type : types)
    if (t.type == type) return;
  fail_layer("tensor '{}' has dtype {}, expected {}", t.name, t.type, fmt::join(types, " or "));
}

void LayerTensors::check_rank(const CheckpointTensor& t, size_t rank) const {
  if (t.shape.size() != rank)
    fail_layer("tensor '{}' has shape [{}], expected {} dimensions", t.name,
               fmt::join(t.shape, ", "), rank);
}

void LayerTensors::check_shape(const CheckpointTensor& t, const std::vector<int64_t>& shape) const {
  if (t.shape != shape)
    fail_layer("tensor '{}' has shape [{}], expected [{}]", t.name, fmt::join(t.shape, ", "),
               fmt::join(shape, ", "));
}

int64_t LayerTensors::numel(const CheckpointTensor& t) const {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

std::vector<float> LayerTensors::floats(const CheckpointTensor& t) const {
  return ckpt_.load_f32(t.name);
}

const uint8_t* LayerTensors::words(const CheckpointTensor& t) const {
  check_type(t, {"I32"});
  if (t.data == nullptr || t.nbytes != uint64_t(numel(t)) * 4)
    fail_layer("tensor '{}' holds {} bytes, expected {} for shape [{}]", t.name, t.nbytes,
               numel(t) * 4, fmt::join(t.shape, ", "));
  return t.data;
}

std::vector<int32_t> LayerTensors::ints(const CheckpointTensor& t) const {
  check_type(t, {"I32", "I64", "I8"});
  const auto dtype = *dtype_from_name(t.type);
  const size_t size = dtype_size(dtype);
  const auto count = static_cast<size_t>(numel(t));
  if (t.data == nullptr || t.nbytes != count * size)
    fail_layer("tensor '{}' holds {} bytes, expected {}", t.name, t.nbytes, count * size);
  std::vector<int32_t> out(count);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = t.data + i * size;
    if (dtype == DType::I32) {
      std::memcpy(&out[i], p, 4);
    } else if (dtype == DType::I8) {
      out[i] = static_cast<int8_t>(*p);
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
        fail_layer("tensor '{}' value {} at index {} is out of range", t.name, v, i);
      out[i] = static_cast<int32_t>(v);
    }
  }
  return out;
}

ScaleDType LayerTensors::scale_dtype(const CheckpointTensor& t) const {
  if (t.type == "F32") return ScaleDType::F32;
  if (t.type == "F16") return ScaleDType::F16;
  if (t.type == "BF16") return ScaleDType::BF16;
  if (t.type == "F8_E4M3") return ScaleDType::E4M3;
  fail_layer("scale tensor '{}' has dtype {}, expected F32, F16, BF16 or F8_E4M3", t.name, t.type);
}

float LayerTensors::scalar(const CheckpointTensor& t) const {
  if (numel(t) != 1)
    fail_layer("tensor '{}' has shape [{}], expected a single value", t.name,
               fmt::join(t.shape, ", "));
  return floats(t)[0];
}

}  // namespace nibble::quant
