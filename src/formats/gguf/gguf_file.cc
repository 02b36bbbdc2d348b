// GGUF reader. The parse is one forward pass over the header with a bounds-checked
// cursor; tensor geometry is validated as one "layout plan" (sizes with checked
// arithmetic, alignment, bounds, no overlap) before any TensorInfo is handed out. Every
// check that llama.cpp's loader missed at some point (reliability-anchors §1.1) has a
// line here: counts vs. file size, string/array lengths vs. remaining bytes, element
// types, alignment, nbytes overflow, data past EOF.
#include "formats/gguf/gguf_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "core/error.h"

namespace nibble::gguf {

static_assert(std::endian::native == std::endian::little,
              "GGUF reader assumes a little-endian host");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// Smallest possible encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;  // key length, 1-byte key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;  // name len, name, n_dims, type, offset
constexpr int kMaxArrayDepth = 3;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

bool is_valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

// Minimum encoded size of one value of this type (strings and arrays: their length fields).
uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL: return 1;
    case ValueType::UINT16:
    case ValueType::INT16: return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32: return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64: return true;
    default: return false;
  }
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

}  // namespace

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "UNKNOWN";
}

uint64_t TensorInfo::n_elements() const {
  // The parser has checked that this product fits in int64.
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

class GgufParser {
 public:
  explicit GgufParser(std::shared_ptr<MappedFile> file)
      : file_(std::move(file)),
        bytes_(file_->data()),
        size_(file_->size()),
        where_(file_->path().string()) {}

  std::shared_ptr<GgufFile> parse() {
    auto result = std::shared_ptr<GgufFile>(new GgufFile());
    result->file_ = file_;
    parse_header(*result);
    parse_metadata(*result);
    parse_tensor_infos(*result);
    plan_layout(*result);
    return result;
  }

 private:
  void need(uint64_t n, std::string_view what) const {
    if (n > size_ - pos_) {
      fail("{}: truncated GGUF file: {} needs {} bytes at offset {} but only {} remain", where_,
           what, n, pos_, size_ - pos_);
    }
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string read_string(std::string_view what) {
    const auto length = read<uint64_t>(what);
    if (length > size_ - pos_) {
      fail("{}: {}: string length {} at offset {} runs past the end of the file ({} bytes remain)",
           where_, what, length, pos_ - 8, size_ - pos_);
    }
    std::string s(reinterpret_cast<const char*>(bytes_ + pos_), length);
    pos_ += length;
    return s;
  }

  void parse_header(GgufFile& out) {
    need(4, "magic");
    uint32_t magic;
    std::memcpy(&magic, bytes_, 4);
    if (magic != kMagic) {
      fail("{}: not a GGUF file (magic bytes {:02x} {:02x} {:02x} {:02x}, expected \"GGUF\")",
           where_, bytes_[0], bytes_[1], bytes_[2], bytes_[3]);
    }
    pos_ = 4;
    const auto version = read<uint32_t>("version");
    if (version != 0 && (version & 0xffffu) == 0) {
      fail("{}: big-endian GGUF files are not supported (version field reads 0x{:08x})", where_,
           version);
    }
    if (version == 1) {
      fail("{}: GGUF version 1 is not supported; re-convert the model with a current llama.cpp",
           where_);
    }
    if (version != 2 && version != 3) {
      fail("{}: unsupported GGUF version {} (supported: 2, 3)", where_, version);
    }
    out.version_ = version;
    n_tensors_ = read<uint64_t>("tensor count");
    n_kv_ = read<uint64_t>("metadata count");
    const uint64_t remaining = size_ - kHeaderBytes;
    if (n_kv_ > remaining / kMinKvBytes) {
      fail("{}: metadata count {} is impossible for a file of {} bytes", where_, n_kv_, size_);
    }
    if (n_tensors_ > remaining / kMinTensorInfoBytes) {
      fail("{}: tensor count {} is impossible for a file of {} bytes", where_, n_tensors_, size_);
    }
    if (n_kv_ * kMinKvBytes + n_tensors_ * kMinTensorInfoBytes > remaining) {
      fail("{}: tensor count {} and metadata count {} are impossible for a file of {} bytes",
           where_, n_tensors_, n_kv_, size_);
    }
  }

  ValueType read_value_type(const std::string& key, std::string_view what) {
    const auto raw = read<uint32_t>(what);
    if (!is_valid_value_type(raw)) {
      fail("{}: key '{}': unknown value type {} at offset {}", where_, key, raw, pos_ - 4);
    }
    return static_cast<ValueType>(raw);
  }

  nlohmann::json read_value(ValueType type, const std::string& key, int depth,
                            ValueType* elem_type_out) {
    switch (type) {
      case ValueType::UINT8: return read<uint8_t>(key);
      case ValueType::INT8: return read<int8_t>(key);
      case ValueType::UINT16: return read<uint16_t>(key);
      case ValueType::INT16: return read<int16_t>(key);
      case ValueType::UINT32: return read<uint32_t>(key);
      case ValueType::INT32: return read<int32_t>(key);
      case ValueType::FLOAT32: return static_cast<double>(read<float>(key));
      case ValueType::UINT64: return read<uint64_t>(key);
      case ValueType::INT64: return read<int64_t>(key);
      case ValueType::FLOAT64: return read<double>(key);
      case ValueType::BOOL: return read<uint8_t>(key) != 0;
      case ValueType::STRING: return read_string(fmt::format("key '{}'", key));
      case ValueType::ARRAY: {
        if (depth >= kMaxArrayDepth) {
          fail("{}: key '{}': arrays nested deeper than {} levels", where_, key, kMaxArrayDepth);
        }
        const ValueType elem = read_value_type(key, "array element type");
        const auto count = read<uint64_t>("array length");
        if (count > (size_ - pos_) / min_value_bytes(elem)) {
          fail(
              "{}: key '{}': array of {} {} elements at offset {} cannot fit in the {} bytes "
              "that remain",
              where_, key, count, value_type_name(elem), pos_ - 12, size_ - pos_);
        }
        if (elem_type_out) *elem_type_out = elem;
        nlohmann::json array = nlohmann::json::array();
        // Reserve only a bounded amount: a JSON node is larger than the smallest encoding.
        array.get_ref<nlohmann::json::array_t&>().reserve(std::min<uint64_t>(count, 1u << 16));
        for (uint64_t i = 0; i < count; ++i) {
          // A nested array carries its own element type and count.
          array.push_back(read_value(elem, key, depth + 1, nullptr));
        }
        return array;
      }
    }
    fail("{}: key '{}': unknown value type", where_, key);
  }

  void parse_metadata(GgufFile& out) {
    std::unordered_set<std::string> seen;
    out.metadata_.reserve(n_kv_);
    for (uint64_t i = 0; i < n_kv_; ++i) {
      std::string key = read_string(fmt::format("metadata key #{}", i));
      if (key.empty()) fail("{}: metadata key #{} is empty", where_, i);
      if (!seen.insert(key).second) fail("{}: duplicate metadata key '{}'", where_, key);
      MetaValue value;
      value.type = read_value_type(key, "value type");
      value.value = read_value(value.type, key, 0, &value.elem_type);
      out.metadata_.emplace_back(std::move(key), std::move(value));
    }
    if (const MetaValue* alignment = out.find("general.alignment")) {
      if (alignment->type != ValueType::UINT32) {
        fail("{}: key 'general.alignment' must be UINT32, found {}", where_,
             value_type_name(alignment->type));
      }
      const auto a = alignment->value.get<uint64_t>();
      if (a == 0 || (a & (a - 1)) != 0) {
        fail("{}: key 'general.alignment' must be a non-zero power of two, found {}", where_, a);
      }
      out.alignment_ = a;
    }
  }

  void parse_tensor_infos(GgufFile& out) {
    std::unordered_set<std::string> seen;
    out.tensors_.reserve(n_tensors_);
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      TensorInfo info;
      info.name = read_string(fmt::format("tensor #{} name", i));
      if (info.name.empty()) fail("{}: tensor #{} has an empty name", where_, i);
      if (!seen.insert(info.name).second) {
        fail("{}: duplicate tensor name '{}'", where_, info.name);
      }
      const auto n_dims = read<uint32_t>(info.name);
      if (n_dims > kMaxDims) {
        fail("{}: tensor '{}': {} dimensions (at most {} supported)", where_, info.name, n_dims,
             kMaxDims);
      }
      for (uint32_t d = 0; d < n_dims; ++d) {
        const auto extent = read<uint64_t>(info.name);
        if (extent > uint64_t(std::numeric_limits<int64_t>::max())) {
          fail("{}: tensor '{}': dimension {} has negative size {}", where_, info.name, d,
               static_cast<int64_t>(extent));
        }
        info.ne.push_back(extent);
      }
      const auto raw_type = read<uint32_t>(info.name);
      info.type = static_cast<GgmlType>(raw_type);
      if (!type_traits(info.type)) {
        fail("{}: tensor '{}': unknown ggml type {}", where_, info.name, raw_type);
      }
      info.offset = read<uint64_t>(info.name);
      out.tensors_.push_back(std::move(info));
    }
  }

  void plan_layout(GgufFile& out) {
    const uint64_t alignment = out.alignment_;
    // pos_ <= size_ < 2^63 and alignment <= 2^31, so this cannot wrap.
    out.data_offset_ = (pos_ + alignment - 1) / alignment * alignment;
    for (TensorInfo& t : out.tensors_) {
      const TypeTraits traits = *type_traits(t.type);
      uint64_t n_elements = 1;
      for (uint64_t d : t.ne) {
        if (!checked_mul(n_elements, d, &n_elements) ||
            n_elements > uint64_t(std::numeric_limits<int64_t>::max())) {
          fail("{}: tensor '{}': element count overflows (shape {})", where_, t.name,
               fmt::join(t.ne, " x "));
        }
      }
      const uint64_t row = t.ne.empty() ? 1 : t.ne[0];
      if (row % uint64_t(traits.block_elems) != 0) {
        fail("{}: tensor '{}': row length {} is not a multiple of the {} block size {}", where_,
             t.name, row, traits.name, traits.block_elems);
      }
      if (!checked_mul(n_elements / uint64_t(traits.block_elems), uint64_t(traits.block_bytes),
                       &t.nbytes)) {
        fail("{}: tensor '{}': byte size overflows", where_, t.name);
      }
      if (t.offset % alignment != 0) {
        fail("{}: tensor '{}': data offset {} is not a multiple of the alignment {}", where_,
             t.name, t.offset, alignment);
      }
      uint64_t begin = 0;
      uint64_t end = 0;
      if (!checked_add(out.data_offset_, t.offset, &begin) || !checked_add(begin, t.nbytes, &end) ||
          end > size_) {
        fail(
            "{}: tensor '{}': data ({} bytes at data offset {}) runs past the end of the file "
            "({} bytes)",
            where_, t.name, t.nbytes, t.offset, size_);
      }
      t.data = bytes_ + begin;
    }
    std::vector<size_t> order(out.tensors_.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return out.tensors_[a].offset < out.tensors_[b].offset; });
    const TensorInfo* previous = nullptr;
    for (size_t index : order) {
      const TensorInfo& t = out.tensors_[index];
      if (t.nbytes == 0) continue;
      if (previous && previous->offset + previous->nbytes > t.offset) {
        fail("{}: tensors '{}' and '{}' overlap (offsets {} + {} bytes and {})", where_,
             previous->name, t.name, previous->offset, previous->nbytes, t.offset);
      }
      previous = &t;
    }
  }

  std::shared_ptr<MappedFile> file_;
  const uint8_t* bytes_;
  uint64_t size_;
  std::string where_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
};

std::shared_ptr<GgufFile> GgufFile::open(const std::filesystem::path& path) {
  return GgufParser(MappedFile::open(path)).parse();
}

const MetaValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

namespace {

[[noreturn]] void wrong_type(const GgufFile& file, std::string_view key, const MetaValue& v,
                             std::string_view wanted) {
  fail("{}: key '{}' has type {}{}, expected {}", file.path().string(), key,
       value_type_name(v.type),
       v.type == ValueType::ARRAY ? fmt::format(" of {}", value_type_name(v.elem_type)) : "",
       wanted);
}

int64_t json_to_int(const GgufFile& file, std::string_view key, const nlohmann::json& j) {
  if (j.is_number_unsigned()) {
    const auto u = j.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) {
      fail("{}: key '{}': value {} does not fit in int64", file.path().string(), key, u);
    }
    return static_cast<int64_t>(u);
  }
  return j.get<int64_t>();
}

}  // namespace

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::STRING) wrong_type(*this, key, *v, "STRING");
  return v->value.get<std::string>();
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_integer_type(v->type)) wrong_type(*this, key, *v, "an integer");
  return json_to_int(*this, key, v->value);
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type == ValueType::FLOAT32 || v->type == ValueType::FLOAT64) {
    return v->value.get<double>();
  }
  if (is_integer_type(v->type)) return static_cast<double>(json_to_int(*this, key, v->value));
  wrong_type(*this, key, *v, "a number");
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::BOOL) wrong_type(*this, key, *v, "BOOL");
  return v->value.get<bool>();
}

std::optional<uint64_t> GgufFile::get_array_size(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::ARRAY) wrong_type(*this, key, *v, "ARRAY");
  return v->value.size();
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::ARRAY || v->elem_type != ValueType::STRING) {
    wrong_type(*this, key, *v, "ARRAY of STRING");
  }
  std::vector<std::string> out;
  out.reserve(v->value.size());
  for (const auto& item : v->value) out.push_back(item.get<std::string>());
  return out;
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::ARRAY || !is_integer_type(v->elem_type)) {
    wrong_type(*this, key, *v, "ARRAY of integers");
  }
  std::vector<int64_t> out;
  out.reserve(v->value.size());
  for (const auto& item : v->value) out.push_back(json_to_int(*this, key, item));
  return out;
}

std::optional<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
  const MetaValue* v = find(key);
  if (!v) return std::nullopt;
  const bool is_float = v->elem_type == ValueType::FLOAT32 || v->elem_type == ValueType::FLOAT64;
  if (v->type != ValueType::ARRAY || !(is_float || is_integer_type(v->elem_type))) {
    wrong_type(*this, key, *v, "ARRAY of numbers");
  }
  std::vector<double> out;
  out.reserve(v->value.size());
  for (const auto& item : v->value) {
    out.push_back(is_float ? item.get<double>()
                           : static_cast<double>(json_to_int(*this, key, item)));
  }
  return out;
}

}  // namespace nibble::gguf
