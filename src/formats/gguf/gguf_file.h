#pragma once
// GGUF v2/v3 reader. Every count, length, offset, size and type is checked against the
// file size before anything is allocated or read, so a hostile file gives an Error,
// never a crash or a huge allocation.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"

namespace nibble::gguf {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

// A metadata value: its GGUF type (and element type for arrays) plus the value as JSON
// (numbers, bools, strings, or an array of those).
struct MetaValue {
  ValueType type = ValueType::UINT32;
  ValueType elem_type = ValueType::UINT32;  // meaningful when type == ARRAY
  nlohmann::json value;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<uint64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  uint64_t offset = 0;       // relative to the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;
  uint64_t n_elements() const;
};

// Block geometry of a type: elements per block and bytes per block.
struct TypeTraits {
  std::string_view name;
  int64_t block_elems = 0;
  int64_t block_bytes = 0;
};
std::optional<TypeTraits> type_traits(GgmlType type);           // nullopt for an unknown type
std::string type_name(GgmlType type);                           // "Q4_K", or "type 99" if unknown
std::optional<GgmlType> type_from_name(std::string_view name);  // "Q4_K" -> Q4_K
std::string_view value_type_name(ValueType type);               // "UINT32", "ARRAY", ...

class GgufFile {
 public:
  static std::shared_ptr<GgufFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::pair<std::string, MetaValue>>& metadata() const { return metadata_; }
  const MetaValue* find(std::string_view key) const;
  // Typed getters: nullopt if absent; Error naming the key if present with the wrong type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  // Arrays: nullopt if absent; Error naming the key if not an array of that kind
  // (get_int_array accepts any integer element type, get_float_array also integers).
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;
  std::optional<std::vector<double>> get_float_array(std::string_view key) const;
  std::optional<uint64_t> get_array_size(std::string_view key) const;
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  std::vector<TensorInfo> tensors_;
  friend class GgufParser;
};

}  // namespace nibble::gguf
