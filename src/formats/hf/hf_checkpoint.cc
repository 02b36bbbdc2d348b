#include "formats/hf/hf_checkpoint.h"

#include <algorithm>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/dtype.h"
#include "core/error.h"
#include "formats/hf/hf_config.h"
#include "formats/safetensors/safetensors_file.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

class HfCheckpoint final : public Checkpoint {
 public:
  explicit HfCheckpoint(std::string source) : source_(std::move(source)) {}

  std::string source() const override { return source_; }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }

  const CheckpointTensor* find(std::string_view name) const override {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

  std::vector<float> load_f32(std::string_view name) const override {
    const auto it = index_.find(std::string(name));
    if (it == index_.end()) fail("{}: tensor '{}' not found", source_, name);
    const SafetensorsTensor& t = *origins_[it->second].tensor;
    std::vector<float> out(t.num_elements());
    convert_to_f32(t.dtype, t.data, out.data(), out.size());
    return out;
  }

  // Adds every tensor of `file`; a name already present is an error naming both files.
  void add(const std::shared_ptr<SafetensorsFile>& file) {
    files_.push_back(file);
    for (const SafetensorsTensor& t : file->tensors()) {
      const auto [it, inserted] = index_.emplace(t.name, tensors_.size());
      if (!inserted)
        fail("{}: tensor '{}' appears in both {} and {}", source_, t.name,
             origins_[it->second].file->source(), file->source());
      CheckpointTensor ct;
      ct.name = t.name;
      ct.type = std::string(dtype_name(t.dtype));
      ct.shape = t.shape;
      ct.nbytes = t.nbytes;
      ct.data = t.data;
      tensors_.push_back(std::move(ct));
      origins_.push_back({file.get(), &t});
    }
  }

 private:
  struct Origin {
    const SafetensorsFile* file;
    const SafetensorsTensor* tensor;
  };
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<CheckpointTensor> tensors_;
  std::vector<Origin> origins_;
  std::unordered_map<std::string, size_t> index_;
};

// Shard names come from a file we did not write: allow only plain names inside the directory.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of("/\\") == std::string::npos && name.find('\0') == std::string::npos;
}

std::unique_ptr<Checkpoint> open_sharded(const fs::path& dir, const fs::path& index_path) {
  const std::string index_name = index_path.string();
  const nlohmann::json index = read_json_file(index_path);
  if (!index.is_object()) fail("{}: must be a JSON object", index_name);
  const auto map_it = index.find("weight_map");
  if (map_it == index.end()) fail("{}: missing field 'weight_map'", index_name);
  if (!map_it->is_object() || map_it->empty())
    fail("{}: 'weight_map' must be a non-empty object of tensor name -> shard file", index_name);

  // shard file -> tensor names the index places there
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string())
      fail("{}: weight_map['{}'] must be a file name string, got {}", index_name, tensor,
           shard.dump());
    const auto& shard_name = shard.get_ref<const std::string&>();
    if (!is_plain_file_name(shard_name))
      fail("{}: weight_map['{}'] = '{}' is not a plain file name in the checkpoint directory",
           index_name, tensor, shard_name);
    by_shard[shard_name].push_back(tensor);
  }

  auto checkpoint = std::make_unique<HfCheckpoint>(dir.string());
  for (const auto& [shard_name, names] : by_shard) {
    const fs::path shard_path = dir / shard_name;
    if (!fs::exists(shard_path))
      fail("{}: shard '{}' (holding tensor '{}' and {} more) does not exist", index_name,
           shard_name, names.front(), names.size() - 1);
    const auto shard = SafetensorsFile::open(shard_path);
    for (const auto& name : names)
      if (shard->find(name) == nullptr)
        fail("{}: tensor '{}' is listed for shard {} but that shard does not contain it",
             index_name, name, shard_path.string());
    checkpoint->add(shard);
  }
  return checkpoint;
}

}  // namespace

std::unique_ptr<Checkpoint> open_hf_checkpoint(const fs::path& path) {
  if (fs::is_regular_file(path)) {
    auto checkpoint = std::make_unique<HfCheckpoint>(path.string());
    checkpoint->add(SafetensorsFile::open(path));
    return checkpoint;
  }
  if (!fs::is_directory(path)) fail("{}: no such checkpoint file or directory", path.string());
  if (fs::exists(path / kSingleFile)) {
    auto checkpoint = std::make_unique<HfCheckpoint>(path.string());
    checkpoint->add(SafetensorsFile::open(path / kSingleFile));
    return checkpoint;
  }
  if (fs::exists(path / kIndexFile)) return open_sharded(path, path / kIndexFile);

  std::vector<fs::path> files;
  bool has_pickle = false;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (!entry.is_regular_file()) continue;
    const auto ext = entry.path().extension();
    if (ext == ".safetensors") files.push_back(entry.path());
    if (ext == ".bin" || ext == ".pt" || ext == ".pth") has_pickle = true;
  }
  if (files.empty())
    fail("{}: no {}, {} or other *.safetensors file found{}", path.string(), kSingleFile,
         kIndexFile,
         has_pickle ? " (PyTorch pickle weights are not loaded: convert them to safetensors)" : "");
  std::sort(files.begin(), files.end());
  auto checkpoint = std::make_unique<HfCheckpoint>(path.string());
  for (const auto& file : files) checkpoint->add(SafetensorsFile::open(file));
  return checkpoint;
}

void write_hf_safetensors(const fs::path& dir, std::span<const SafetensorsTensorData> tensors,
                          uint64_t max_shard_bytes,
                          const std::map<std::string, std::string>& metadata) {
  if (max_shard_bytes == 0) fail("{}: max shard size must be positive", dir.string());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create directory: {}", dir.string(), ec.message());

  // Greedy split in the caller's order; a tensor larger than the limit gets a shard to itself.
  std::vector<std::vector<SafetensorsTensorData>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  std::unordered_map<std::string_view, size_t> seen;
  for (const auto& t : tensors) {
    if (!seen.emplace(t.spec.name, 0).second)
      fail("{}: duplicate tensor name '{}'", dir.string(), t.spec.name);
    const uint64_t size = t.spec.nbytes();
    if (!shards.back().empty() && shard_bytes + size > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += size;
    total_bytes += size;
  }
  if (shards.size() == 1) {
    write_safetensors(dir / kSingleFile, shards[0], metadata);
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    write_safetensors(dir / name, shards[i], metadata);
    for (const auto& t : shards[i]) weight_map[t.spec.name] = name;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}},
                                {"weight_map", std::move(weight_map)}};
  write_file_atomic(dir / kIndexFile, index.dump(2) + "\n");
}

}  // namespace nibble
