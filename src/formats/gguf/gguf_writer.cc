#include "formats/gguf/gguf_writer.h"

#include <cstring>
#include <limits>
#include <unordered_set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace nibble::gguf {
namespace {

constexpr uint32_t kVersion = 3;
constexpr size_t kMaxDims = 4;

class ByteSink {
 public:
  template <typename T>
  void put(T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    bytes_.append(raw, sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    bytes_.append(s);
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

uint64_t align_up(uint64_t v, uint64_t alignment) {
  return (v + alignment - 1) / alignment * alignment;
}

template <typename T>
T checked_integer(const nlohmann::json& j, const std::string& where) {
  if (j.is_number_unsigned()) {
    const auto u = j.get<uint64_t>();
    if (u <= uint64_t(std::numeric_limits<T>::max())) return static_cast<T>(u);
  } else if (j.is_number_integer()) {
    const auto s = j.get<int64_t>();
    if (s >= int64_t(std::numeric_limits<T>::min()) &&
        (s < 0 || uint64_t(s) <= uint64_t(std::numeric_limits<T>::max()))) {
      return static_cast<T>(s);
    }
  }
  fail("{}: value {} does not fit the declared integer type", where, j.dump());
}

void encode_scalar(ByteSink& out, ValueType type, const nlohmann::json& j,
                   const std::string& where) {
  switch (type) {
    case ValueType::UINT8: out.put(checked_integer<uint8_t>(j, where)); return;
    case ValueType::INT8: out.put(checked_integer<int8_t>(j, where)); return;
    case ValueType::UINT16: out.put(checked_integer<uint16_t>(j, where)); return;
    case ValueType::INT16: out.put(checked_integer<int16_t>(j, where)); return;
    case ValueType::UINT32: out.put(checked_integer<uint32_t>(j, where)); return;
    case ValueType::INT32: out.put(checked_integer<int32_t>(j, where)); return;
    case ValueType::UINT64: out.put(checked_integer<uint64_t>(j, where)); return;
    case ValueType::INT64: out.put(checked_integer<int64_t>(j, where)); return;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64: {
      // A NaN metadata value round-trips through JSON as null.
      double v = std::numeric_limits<double>::quiet_NaN();
      if (j.is_number()) {
        v = j.get<double>();
      } else if (!j.is_null()) {
        fail("{}: expected a number, found {}", where, j.type_name());
      }
      if (type == ValueType::FLOAT32) {
        out.put(static_cast<float>(v));
      } else {
        out.put(v);
      }
      return;
    }
    case ValueType::BOOL:
      if (!j.is_boolean()) fail("{}: expected a bool, found {}", where, j.type_name());
      out.put<uint8_t>(j.get<bool>() ? 1 : 0);
      return;
    case ValueType::STRING:
      if (!j.is_string()) fail("{}: expected a string, found {}", where, j.type_name());
      out.put_string(j.get_ref<const std::string&>());
      return;
    case ValueType::ARRAY: break;
  }
  fail("{}: nested arrays are not supported by the writer", where);
}

void encode_value(ByteSink& out, const MetaValue& value, const std::string& where) {
  if (value.type != ValueType::ARRAY) {
    encode_scalar(out, value.type, value.value, where);
    return;
  }
  if (!value.value.is_array()) fail("{}: ARRAY value is not a JSON array", where);
  out.put(static_cast<uint32_t>(value.elem_type));
  out.put<uint64_t>(value.value.size());
  for (const auto& item : value.value) encode_scalar(out, value.elem_type, item, where);
}

}  // namespace

GgufWriter::GgufWriter(std::filesystem::path path) : path_(std::move(path)) {}

void GgufWriter::add(std::string key, MetaValue value) {
  if (key.empty()) fail("{}: empty metadata key", path_.string());
  for (const auto& [k, v] : metadata_) {
    if (k == key) fail("{}: duplicate metadata key '{}'", path_.string(), key);
  }
  if (static_cast<uint32_t>(value.type) > static_cast<uint32_t>(ValueType::FLOAT64)) {
    fail("{}: key '{}': invalid value type", path_.string(), key);
  }
  if (key == "general.alignment") {
    if (value.type != ValueType::UINT32) {
      fail("{}: key 'general.alignment' must be UINT32", path_.string());
    }
    const auto a = checked_integer<uint32_t>(value.value, path_.string() + ": general.alignment");
    if (a == 0 || (a & (a - 1)) != 0) {
      fail("{}: general.alignment must be a non-zero power of two, got {}", path_.string(), a);
    }
    alignment_ = a;
  }
  // Encode once now so that a bad value is reported at the call that added it.
  ByteSink probe;
  encode_value(probe, value, fmt::format("{}: key '{}'", path_.string(), key));
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_string(std::string key, std::string value) {
  add(std::move(key), {ValueType::STRING, ValueType::UINT32, std::move(value)});
}
void GgufWriter::add_uint32(std::string key, uint32_t value) {
  add(std::move(key), {ValueType::UINT32, ValueType::UINT32, value});
}
void GgufWriter::add_int32(std::string key, int32_t value) {
  add(std::move(key), {ValueType::INT32, ValueType::UINT32, value});
}
void GgufWriter::add_uint64(std::string key, uint64_t value) {
  add(std::move(key), {ValueType::UINT64, ValueType::UINT32, value});
}
void GgufWriter::add_int64(std::string key, int64_t value) {
  add(std::move(key), {ValueType::INT64, ValueType::UINT32, value});
}
void GgufWriter::add_float32(std::string key, float value) {
  add(std::move(key), {ValueType::FLOAT32, ValueType::UINT32, static_cast<double>(value)});
}
void GgufWriter::add_float64(std::string key, double value) {
  add(std::move(key), {ValueType::FLOAT64, ValueType::UINT32, value});
}
void GgufWriter::add_bool(std::string key, bool value) {
  add(std::move(key), {ValueType::BOOL, ValueType::UINT32, value});
}
void GgufWriter::add_string_array(std::string key, const std::vector<std::string>& values) {
  add(std::move(key), {ValueType::ARRAY, ValueType::STRING, values});
}
void GgufWriter::add_int32_array(std::string key, const std::vector<int32_t>& values) {
  add(std::move(key), {ValueType::ARRAY, ValueType::INT32, values});
}
void GgufWriter::add_float32_array(std::string key, const std::vector<float>& values) {
  nlohmann::json array = nlohmann::json::array();
  for (float v : values) array.push_back(static_cast<double>(v));
  add(std::move(key), {ValueType::ARRAY, ValueType::FLOAT32, std::move(array)});
}

void GgufWriter::set_alignment(uint32_t alignment) {
  for (auto it = metadata_.begin(); it != metadata_.end(); ++it) {
    if (it->first == "general.alignment") {
      metadata_.erase(it);
      break;
    }
  }
  add_uint32("general.alignment", alignment);
}

GgufWriter::PendingTensor& GgufWriter::new_tensor(std::string name, GgmlType type,
                                                  std::vector<int64_t> shape) {
  const std::string where = fmt::format("{}: tensor '{}'", path_.string(), name);
  if (name.empty()) fail("{}: empty tensor name", path_.string());
  for (const auto& t : tensors_) {
    if (t.name == name) fail("{}: duplicate tensor name", where);
  }
  const auto traits = type_traits(type);
  if (!traits) fail("{}: unknown ggml {}", where, type_name(type));
  if (shape.size() > kMaxDims) fail("{}: {} dimensions (at most 4)", where, shape.size());
  uint64_t n_elements = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n_elements, uint64_t(d), &n_elements) ||
        n_elements > uint64_t(std::numeric_limits<int64_t>::max())) {
      fail("{}: invalid shape", where);
    }
  }
  const uint64_t row = shape.empty() ? 1 : uint64_t(shape.back());
  if (row % uint64_t(traits->block_elems) != 0) {
    fail("{}: innermost dimension {} is not a multiple of the {} block size {}", where, row,
         traits->name, traits->block_elems);
  }
  PendingTensor t;
  t.name = std::move(name);
  t.type = type;
  t.shape = std::move(shape);
  t.nbytes = n_elements / uint64_t(traits->block_elems) * uint64_t(traits->block_bytes);
  tensors_.push_back(std::move(t));
  return tensors_.back();
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> shape,
                            std::vector<uint8_t> data) {
  PendingTensor& t = new_tensor(std::move(name), type, std::move(shape));
  if (data.size() != t.nbytes) {
    const std::string bad = t.name;
    const uint64_t want = t.nbytes;
    tensors_.pop_back();
    fail("{}: tensor '{}': {} bytes given, its shape and type need {}", path_.string(), bad,
         data.size(), want);
  }
  t.owned = std::move(data);
  t.view = t.owned;
}

void GgufWriter::add_tensor_view(std::string name, GgmlType type, std::vector<int64_t> shape,
                                 std::span<const uint8_t> data) {
  PendingTensor& t = new_tensor(std::move(name), type, std::move(shape));
  if (data.size() != t.nbytes) {
    const std::string bad = t.name;
    const uint64_t want = t.nbytes;
    tensors_.pop_back();
    fail("{}: tensor '{}': {} bytes given, its shape and type need {}", path_.string(), bad,
         data.size(), want);
  }
  t.view = data;
}

void GgufWriter::add_tensor_lazy(std::string name, GgmlType type, std::vector<int64_t> shape,
                                 TensorProducer producer) {
  PendingTensor& t = new_tensor(std::move(name), type, std::move(shape));
  t.producer = std::move(producer);
}

void GgufWriter::write() {
  ByteSink header;
  header.put<uint32_t>(0x46554747);  // "GGUF"
  header.put<uint32_t>(kVersion);
  header.put<uint64_t>(tensors_.size());
  header.put<uint64_t>(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    header.put_string(key);
    header.put(static_cast<uint32_t>(value.type));
    encode_value(header, value, fmt::format("{}: key '{}'", path_.string(), key));
  }
  // ggml's loader requires offsets to be the running sum of padded sizes, in info order.
  uint64_t offset = 0;
  for (auto& t : tensors_) {
    t.offset = offset;
    offset += align_up(t.nbytes, alignment_);
    header.put_string(t.name);
    header.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) header.put<uint64_t>(*it);
    header.put(static_cast<uint32_t>(t.type));
    header.put<uint64_t>(t.offset);
  }
  AtomicFileWriter file(path_);
  file.write(header.bytes());
  file.write_zeros(align_up(file.bytes_written(), alignment_) - file.bytes_written());
  for (auto& t : tensors_) {
    std::vector<uint8_t> produced;
    std::span<const uint8_t> bytes = t.view;
    if (t.producer) {
      produced = t.producer();
      if (produced.size() != t.nbytes) {
        fail("{}: tensor '{}': producer gave {} bytes, its shape and type need {}", path_.string(),
             t.name, produced.size(), t.nbytes);
      }
      bytes = produced;
    }
    file.write(bytes.data(), bytes.size());
    file.write_zeros(align_up(t.nbytes, alignment_) - t.nbytes);
  }
  file.commit();
}

}  // namespace nibble::gguf
