#include "formats/gguf/gguf_checkpoint.h"

#include "core/error.h"
#include "formats/gguf/gguf_dequant.h"

namespace nibble::gguf {

GgufCheckpoint::GgufCheckpoint(std::shared_ptr<GgufFile> file) : file_(std::move(file)) {
  tensors_.reserve(file_->tensors().size());
  for (const TensorInfo& info : file_->tensors()) {
    CheckpointTensor t;
    t.name = info.name;
    t.type = type_name(info.type);
    t.shape.assign(info.ne.rbegin(), info.ne.rend());
    t.nbytes = info.nbytes;
    t.data = info.data;
    tensors_.push_back(std::move(t));
  }
}

std::string GgufCheckpoint::source() const { return file_->path().string(); }

const CheckpointTensor* GgufCheckpoint::find(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::vector<float> GgufCheckpoint::load_f32(std::string_view name) const {
  const TensorInfo* info = file_->find_tensor(name);
  if (!info) fail("{}: no tensor named '{}'", source(), name);
  if (!can_dequantize(info->type)) {
    fail("{}: tensor '{}': dequantization of ggml type {} is not supported", source(), name,
         type_name(info->type));
  }
  // The parser checked nbytes against the file size; n_elements is at most a small
  // multiple of it, so this allocation is bounded by the file itself.
  std::vector<float> out(info->n_elements());
  dequantize_row(info->type, info->data, out.data(), static_cast<int64_t>(out.size()));
  return out;
}

std::unique_ptr<GgufCheckpoint> open_gguf_checkpoint(const std::filesystem::path& path) {
  return std::make_unique<GgufCheckpoint>(GgufFile::open(path));
}

}  // namespace nibble::gguf
