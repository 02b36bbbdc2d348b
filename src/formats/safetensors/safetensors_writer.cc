#include "formats/safetensors/safetensors_writer.h"

#include <algorithm>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/safetensors/safetensors_file.h"

namespace nibble {

uint64_t SafetensorsTensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) fail("safetensors writer: tensor '{}': negative dimension {}", name, d);
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      fail("safetensors writer: tensor '{}': byte size overflows 64 bits", name);
  }
  return n;
}

namespace {

// Wider elements first keeps every tensor aligned to its element size given an 8-aligned start.
bool canonical_order(const SafetensorsTensorSpec& a, const SafetensorsTensorSpec& b) {
  const size_t sa = dtype_size(a.dtype), sb = dtype_size(b.dtype);
  if (sa != sb) return sa > sb;
  return a.name < b.name;
}

std::string build_header(const std::filesystem::path& path,
                         const std::vector<SafetensorsTensorSpec>& specs,
                         std::map<std::string, std::string> metadata) {
  // transformers refuses files whose format is not pt/tf/flax/mlx; the bytes are the same for
  // every framework, so always claim "pt".
  metadata["format"] = "pt";
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& spec : specs) {
    const uint64_t size = spec.nbytes();
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype_name(spec.dtype);
    entry["shape"] = spec.shape;
    entry["data_offsets"] = {offset, offset + size};
    header[spec.name] = std::move(entry);
    if (__builtin_add_overflow(offset, size, &offset))
      fail("{}: total tensor size overflows 64 bits", path.string());
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot encode header (tensor names and metadata must be UTF-8): {}", path.string(),
         e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kSafetensorsMaxHeaderSize)
    fail("{}: header of {} bytes exceeds the {}-byte limit readers enforce", path.string(),
         text.size(), kSafetensorsMaxHeaderSize);
  return text;
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::filesystem::path path,
                                     std::vector<SafetensorsTensorSpec> specs,
                                     std::map<std::string, std::string> metadata)
    : path_(std::move(path)), specs_(std::move(specs)) {
  std::unordered_set<std::string_view> names;
  for (const auto& spec : specs_) {
    if (spec.name.empty()) fail("{}: a tensor has an empty name", path_.string());
    if (spec.name == "__metadata__")
      fail("{}: '__metadata__' is reserved and cannot name a tensor", path_.string());
    if (spec.name.size() > kSafetensorsMaxNameLength || spec.name.find('\0') != std::string::npos)
      fail("{}: tensor name '{}' is too long or contains NUL", path_.string(),
           spec.name.substr(0, 64).c_str());
    if (!names.insert(spec.name).second)
      fail("{}: duplicate tensor name '{}'", path_.string(), spec.name);
  }
  std::sort(specs_.begin(), specs_.end(), canonical_order);
  const std::string header = build_header(path_, specs_, std::move(metadata));
  out_ = std::make_unique<AtomicFileWriter>(path_);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t(header.size()) >> (8 * i));
  out_->write(length, 8);
  out_->write(header);
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write(std::string_view name, std::span<const uint8_t> bytes) {
  if (!out_) fail("{}: write after commit", path_.string());
  if (next_ >= specs_.size())
    fail("{}: tensor '{}' written but every declared tensor is already written", path_.string(),
         name);
  const auto& spec = specs_[next_];
  if (spec.name != name)
    fail("{}: tensor '{}' written out of order; expected '{}'", path_.string(), name, spec.name);
  if (bytes.size() != spec.nbytes())
    fail("{}: tensor '{}': got {} bytes, shape and dtype {} need {}", path_.string(), name,
         bytes.size(), dtype_name(spec.dtype), spec.nbytes());
  out_->write(bytes.data(), bytes.size());
  ++next_;
}

void SafetensorsWriter::commit() {
  if (!out_) fail("{}: committed twice", path_.string());
  if (next_ != specs_.size())
    fail("{}: only {} of {} tensors written (next missing: '{}')", path_.string(), next_,
         specs_.size(), specs_[next_].name);
  out_->commit();
  out_.reset();
}

void write_safetensors(const std::filesystem::path& path,
                       std::span<const SafetensorsTensorData> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensorSpec> specs;
  specs.reserve(tensors.size());
  std::map<std::string_view, const SafetensorsTensorData*> by_name;
  for (const auto& t : tensors) {
    specs.push_back(t.spec);
    by_name.emplace(t.spec.name, &t);
  }
  SafetensorsWriter writer(path, std::move(specs), metadata);
  for (const auto& spec : writer.order()) writer.write(spec.name, by_name.at(spec.name)->data);
  writer.commit();
}

}  // namespace nibble
