#include "formats/safetensors/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace nibble {
namespace {

using nlohmann::json;

// Real headers nest three levels (root, tensor entry, shape array); anything deep is hostile
// and would otherwise cost memory proportional to the header length.
constexpr size_t kMaxJsonDepth = 16;

// First pass over the header text. nlohmann::json keeps only one value of a duplicated key, so
// duplicates (which the reference parser rejects) are found here, before the real parse;
// nesting depth is bounded at the same time.
class HeaderPrecheck : public nlohmann::json_sax<json> {
 public:
  std::string problem;  // empty when the text passed

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }

  bool start_object(std::size_t) override {
    if (!push()) return false;
    frames_.back().is_object = true;
    return true;
  }
  bool key(string_t& name) override {
    Frame& frame = frames_.back();
    if (!frame.keys.insert(name).second) {
      if (frames_.size() == 1) {
        problem = fmt::format("duplicate tensor name '{}'", name);
      } else {
        problem = fmt::format("duplicate key '{}' inside the entry of '{}'", name, frames_[0].last);
      }
      return false;
    }
    frame.last = name;
    return true;
  }
  bool end_object() override { return pop(); }
  bool start_array(std::size_t) override { return push(); }
  bool end_array() override { return pop(); }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& error) override {
    problem = fmt::format("header is not valid JSON: {}", error.what());
    return false;
  }

 private:
  struct Frame {
    bool is_object = false;
    std::unordered_set<std::string> keys;
    std::string last;
  };
  bool push() {
    if (frames_.size() >= kMaxJsonDepth) {
      problem = fmt::format("header JSON nests deeper than {} levels", kMaxJsonDepth);
      return false;
    }
    frames_.emplace_back();
    return true;
  }
  bool pop() {
    frames_.pop_back();
    return true;
  }
  std::vector<Frame> frames_;
};

std::string supported_dtype_list() {
  std::string list;
  for (auto t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                 DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (!list.empty()) list += ", ";
    list += dtype_name(t);
  }
  return list;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A parsed entry before its place in the data section is checked.
struct PendingTensor {
  SafetensorsTensor tensor;
  uint64_t end = 0;
};

PendingTensor parse_tensor_entry(const std::string& source, const std::string& name,
                                 const json& entry) {
  if (name.empty()) fail("{}: a tensor has an empty name", source);
  if (name.size() > kSafetensorsMaxNameLength)
    fail("{}: tensor name of {} bytes exceeds the {}-byte limit ('{}...')", source, name.size(),
         kSafetensorsMaxNameLength, name.substr(0, 64));
  if (name.find('\0') != std::string::npos)
    fail("{}: tensor name contains a NUL byte ('{}')", source, name.c_str());
  if (!entry.is_object())
    fail("{}: tensor '{}': entry must be a JSON object, got {}", source, name, entry.type_name());

  PendingTensor pending;
  SafetensorsTensor& t = pending.tensor;
  t.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) fail("{}: tensor '{}': missing field 'dtype'", source, name);
  if (!dtype_it->is_string())
    fail("{}: tensor '{}': field 'dtype' must be a string, got {}", source, name,
         dtype_it->type_name());
  const auto& dtype_str = dtype_it->get_ref<const std::string&>();
  const auto dtype = dtype_from_name(dtype_str);
  if (!dtype)
    fail("{}: tensor '{}': unsupported dtype '{}' (supported: {})", source, name, dtype_str,
         supported_dtype_list());
  t.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) fail("{}: tensor '{}': missing field 'shape'", source, name);
  if (!shape_it->is_array())
    fail("{}: tensor '{}': field 'shape' must be an array, got {}", source, name,
         shape_it->type_name());
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const json& dim = (*shape_it)[i];
    if (!dim.is_number_integer())
      fail("{}: tensor '{}': shape[{}] must be a non-negative integer, got {}", source, name, i,
           dim.dump());
    if (!dim.is_number_unsigned())
      fail("{}: tensor '{}': shape[{}] is negative ({})", source, name, i, dim.get<int64_t>());
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("{}: tensor '{}': shape[{}] = {} is too large", source, name, i, d);
    t.shape.push_back(static_cast<int64_t>(d));
  }
  // A zero dimension makes any shape legal (an empty tensor), whatever the other dimensions.
  uint64_t elements = 1;
  const bool empty = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
  if (empty) elements = 0;
  for (size_t i = 0; i < t.shape.size() && !empty; ++i) {
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(t.shape[i]), &elements))
      fail("{}: tensor '{}': shape {} has an element count that overflows 64 bits", source, name,
           shape_it->dump());
  }
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(dtype_size(t.dtype)), &t.nbytes))
    fail("{}: tensor '{}': byte size of shape {} x {} overflows 64 bits", source, name,
         shape_it->dump(), dtype_str);

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end())
    fail("{}: tensor '{}': missing field 'data_offsets'", source, name);
  const json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    fail("{}: tensor '{}': field 'data_offsets' must be two non-negative integers, got {}", source,
         name, offsets.dump());
  t.offset = offsets[0].get<uint64_t>();
  pending.end = offsets[1].get<uint64_t>();
  if (pending.end < t.offset)
    fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", source, name, t.offset,
         pending.end);
  if (pending.end - t.offset != t.nbytes)
    fail("{}: tensor '{}': data_offsets [{}, {}] hold {} bytes but shape {} x {} needs {}", source,
         name, t.offset, pending.end, pending.end - t.offset, shape_it->dump(), dtype_str,
         t.nbytes);
  return pending;
}

}  // namespace

uint64_t SafetensorsTensor::num_elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = path.string();
  file->mapping_ = MappedFile::open(path);
  file->parse(file->mapping_->bytes());
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_memory(std::span<const uint8_t> bytes,
                                                              std::string source) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = std::move(source);
  file->parse(bytes);
  return file;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::parse(std::span<const uint8_t> bytes) {
  const std::string& src = source_;
  const uint64_t file_size = bytes.size();
  if (file_size < 8)
    fail("{}: file is {} bytes, too short for the 8-byte header length (truncated?)", src,
         file_size);
  const uint64_t header_size = read_u64_le(bytes.data());
  if (header_size > kSafetensorsMaxHeaderSize)
    fail("{}: header length {} exceeds the {}-byte limit (corrupt or not a safetensors file)", src,
         header_size, kSafetensorsMaxHeaderSize);
  if (header_size > file_size - 8)
    fail("{}: header length {} exceeds the {} bytes that follow the length field (truncated?)", src,
         header_size, file_size - 8);
  if (header_size < 2)
    fail("{}: header of {} bytes is too short to be a JSON object", src, header_size);
  header_size_ = header_size;
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const char* header_end = header_begin + header_size;
  if (header_begin[0] != '{')
    fail("{}: header must be a JSON object starting with '{{', found byte 0x{:02x}", src,
         static_cast<uint8_t>(header_begin[0]));

  HeaderPrecheck precheck;
  const bool clean = json::sax_parse(header_begin, header_end, &precheck);
  if (!clean || !precheck.problem.empty())
    fail("{}: {}", src, precheck.problem.empty() ? "header is not valid JSON" : precheck.problem);
  json header;
  try {
    header = json::parse(header_begin, header_end);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", src, e.what());
  }
  if (!header.is_object())
    fail("{}: header must be a JSON object, got {}", src, header.type_name());

  const uint64_t data_size = file_size - 8 - header_size;
  const uint8_t* data_begin = bytes.data() + 8 + header_size;
  std::vector<PendingTensor> pending;
  pending.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object())
        fail("{}: __metadata__ must be an object of strings, got {}", src, entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          fail("{}: __metadata__['{}'] must be a string, got {}", src, key, value.type_name());
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    pending.push_back(parse_tensor_entry(src, name, entry));
  }

  // Each data byte must have exactly one owner: overlapping ranges let a tiny file claim huge
  // tensors, gaps and trailing bytes let a file be two formats at once.
  std::sort(pending.begin(), pending.end(), [](const PendingTensor& a, const PendingTensor& b) {
    if (a.tensor.offset != b.tensor.offset) return a.tensor.offset < b.tensor.offset;
    if (a.end != b.end) return a.end < b.end;
    return a.tensor.name < b.tensor.name;
  });
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const PendingTensor& p : pending) {
    const SafetensorsTensor& t = p.tensor;
    if (t.offset < expected)
      fail("{}: tensor '{}': data_offsets [{}, {}] overlap tensor '{}' which ends at {}", src,
           t.name, t.offset, p.end, *previous, expected);
    if (t.offset > expected)
      fail(
          "{}: tensor '{}': data_offsets [{}, {}] leave a gap of {} bytes after {} (at data "
          "offset {})",
          src, t.name, t.offset, p.end, t.offset - expected,
          previous ? fmt::format("tensor '{}'", *previous) : std::string("the header"), expected);
    if (p.end > data_size)
      fail(
          "{}: tensor '{}': data_offsets [{}, {}] run past the end of the data section: it needs "
          "file size {} but the file has {} bytes (truncated?)",
          src, t.name, t.offset, p.end, 8 + header_size + p.end, file_size);
    expected = p.end;
    previous = &t.name;
  }
  if (expected != data_size)
    fail("{}: {} trailing bytes after the last tensor (data section is {} bytes, tensors cover {})",
         src, data_size - expected, data_size, expected);

  tensors_.reserve(pending.size());
  for (PendingTensor& p : pending) {
    p.tensor.data = data_begin + p.tensor.offset;
    index_.emplace(p.tensor.name, tensors_.size());
    tensors_.push_back(std::move(p.tensor));
  }
}

}  // namespace nibble
