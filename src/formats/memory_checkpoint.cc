#include "formats/memory_checkpoint.h"

#include <algorithm>

#include "core/dtype.h"
#include "core/error.h"

namespace nibble {

void MemoryCheckpoint::add(const std::string& name, const std::string& type,
                           std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  remove(name);
  std::vector<uint8_t>& stored = storage_[name] = std::move(bytes);
  CheckpointTensor t;
  t.name = name;
  t.type = type;
  t.shape = std::move(shape);
  t.nbytes = stored.size();
  t.data = stored.data();
  tensors_.push_back(std::move(t));
}

void MemoryCheckpoint::remove(const std::string& name) {
  std::erase_if(tensors_, [&](const CheckpointTensor& t) { return t.name == name; });
  storage_.erase(name);
}

void MemoryCheckpoint::reshape(const std::string& name, std::vector<int64_t> shape) {
  for (CheckpointTensor& t : tensors_)
    if (t.name == name) t.shape = shape;
}

const CheckpointTensor* MemoryCheckpoint::find(std::string_view name) const {
  for (const CheckpointTensor& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> MemoryCheckpoint::load_f32(std::string_view name) const {
  const CheckpointTensor* t = find(name);
  if (!t) fail("{}: no tensor '{}'", source_, name);
  const std::optional<DType> dtype = dtype_from_name(t->type);
  if (!dtype)
    fail("{}: tensor '{}' has type {}, which does not convert to f32", source_, name, t->type);
  const size_t count = t->nbytes / dtype_size(*dtype);
  std::vector<float> out(count);
  convert_to_f32(*dtype, t->data, out.data(), count);
  return out;
}

}  // namespace nibble
