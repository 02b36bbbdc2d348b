#pragma once
// A GGUF file seen as a nibble::Checkpoint: tensor names exactly as stored
// ("blk.0.attn_q.weight"), shapes in PyTorch order (ggml's ne reversed), type = the ggml
// type name ("Q4_1"). Mapping to HF names and undoing llama.cpp's q/k row permutation is
// the job of the model's weight-name map, not of this layer.
#include <filesystem>
#include <memory>

#include "formats/checkpoint.h"
#include "formats/gguf/gguf_file.h"

namespace nibble::gguf {

class GgufCheckpoint : public Checkpoint {
 public:
  explicit GgufCheckpoint(std::shared_ptr<GgufFile> file);

  std::string source() const override;
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const override;
  // Dequantizes with the reference routines of gguf_dequant.h.
  std::vector<float> load_f32(std::string_view name) const override;

  const GgufFile& file() const { return *file_; }
  const std::shared_ptr<GgufFile>& shared_file() const { return file_; }
  // The raw tensor record (ggml type, ne) behind a checkpoint tensor; nullptr when absent.
  const TensorInfo* info(std::string_view name) const { return file_->find_tensor(name); }

 private:
  std::shared_ptr<GgufFile> file_;
  std::vector<CheckpointTensor> tensors_;
};

// Opens and validates a GGUF file. Throws nibble::Error naming the file on any defect.
std::unique_ptr<GgufCheckpoint> open_gguf_checkpoint(const std::filesystem::path& path);

}  // namespace nibble::gguf
