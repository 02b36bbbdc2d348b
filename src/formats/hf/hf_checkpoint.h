#pragma once
// A Hugging Face checkpoint directory (safetensors weights) seen as a nibble::Checkpoint, and
// the reverse: writing tensors as model.safetensors or as shards plus an index.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "formats/checkpoint.h"
#include "formats/safetensors/safetensors_writer.h"

namespace nibble {

// Finds the weights the way transformers does: model.safetensors, else the shards named by
// model.safetensors.index.json (every listed tensor must be in its shard, no tensor in two
// shards), else (as vLLM does) every *.safetensors file in the directory. A path to a single
// .safetensors file is accepted too. Pickle weights (*.bin) are never loaded.
std::unique_ptr<Checkpoint> open_hf_checkpoint(const std::filesystem::path& path);

// transformers' default max_shard_size ("5GB").
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;

// Writes `tensors` into `dir` (created if needed): one model.safetensors when the total fits in
// `max_shard_bytes`, else model-0000i-of-0000K.safetensors shards (in the given tensor order)
// plus model.safetensors.index.json, which is written last. Every file is written atomically.
void write_hf_safetensors(const std::filesystem::path& dir,
                          std::span<const SafetensorsTensorData> tensors,
                          uint64_t max_shard_bytes = kDefaultMaxShardBytes,
                          const std::map<std::string, std::string>& metadata = {});

}  // namespace nibble
