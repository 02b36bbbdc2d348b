#include "quantize/calibration_store.h"

#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/safetensors/safetensors_file.h"
#include "formats/safetensors/safetensors_writer.h"

namespace nibble::quantize {
namespace {

std::filesystem::path layer_file(const std::filesystem::path& dir, int64_t layer) {
  return dir / fmt::format("layer_{}.safetensors", layer);
}

template <typename T>
std::span<const uint8_t> as_bytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

template <typename T>
std::vector<T> read_tensor(const SafetensorsFile& f, const std::string& name, DType dtype,
                           uint64_t count) {
  const SafetensorsTensor* t = f.find(name);
  NIBBLE_CHECK(t != nullptr && t->dtype == dtype && t->num_elements() == count,
               "{}: tensor '{}' is missing or is not {} values of {}", f.source(), name, count,
               dtype_name(dtype));
  std::vector<T> out(count);
  if (count > 0) std::memcpy(out.data(), t->data, count * sizeof(T));
  return out;
}

}  // namespace

void save_layer_statistics(const std::filesystem::path& dir, int64_t layer,
                           const LayerStatistics& stats) {
  std::filesystem::create_directories(dir);
  std::vector<SafetensorsTensorData> tensors;
  std::vector<std::vector<int64_t>> counts;
  counts.reserve(stats.size());
  for (const auto& [group, s] : stats) {
    const std::string p = group_name(group);
    const int64_t k = s->cols();
    counts.push_back({s->count()});
    tensors.push_back({{p + ".count", DType::I64, {1}}, as_bytes(counts.back())});
    if (s->has_hessian())
      tensors.push_back({{p + ".hessian_sum", DType::F64, {k, k}}, as_bytes(s->hessian_sum())});
    tensors.push_back({{p + ".abs_sum", DType::F64, {k}}, as_bytes(s->abs_sum())});
    if (!s->square_sum().empty())
      tensors.push_back({{p + ".square_sum", DType::F64, {k}}, as_bytes(s->square_sum())});
    tensors.push_back({{p + ".max_abs", DType::F32, {k}}, as_bytes(s->max_abs())});
    tensors.push_back({{p + ".kept", DType::F32, {s->kept_count(), k}}, as_bytes(s->kept_rows())});
  }
  write_safetensors(layer_file(dir, layer), tensors, {{"nibble", "calibration statistics"}});
}

LayerStatistics load_layer_statistics(const std::filesystem::path& dir, int64_t layer,
                                      const LayerDims& dims) {
  const auto file = SafetensorsFile::open(layer_file(dir, layer));
  LayerStatistics stats;
  for (InputGroup group : kAllGroups) {
    const std::string p = group_name(group);
    const int64_t k = group == InputGroup::O      ? dims.n_heads * dims.head_dim
                      : group == InputGroup::Down ? dims.intermediate
                                                  : dims.hidden;
    const auto count = read_tensor<int64_t>(*file, p + ".count", DType::I64, 1);
    std::vector<double> h;
    if (file->find(p + ".hessian_sum"))
      h = read_tensor<double>(*file, p + ".hessian_sum", DType::F64, uint64_t(k * k));
    auto abs_sum = read_tensor<double>(*file, p + ".abs_sum", DType::F64, uint64_t(k));
    auto max_abs = read_tensor<float>(*file, p + ".max_abs", DType::F32, uint64_t(k));
    // Absent in files written before importance-weighted GGUF quantization.
    std::vector<double> square_sum;
    if (file->find(p + ".square_sum"))
      square_sum = read_tensor<double>(*file, p + ".square_sum", DType::F64, uint64_t(k));
    const SafetensorsTensor* kept_t = file->find(p + ".kept");
    NIBBLE_CHECK(kept_t && kept_t->shape.size() == 2 && kept_t->shape[1] == k,
                 "{}: tensor '{}.kept' is missing or not [rows, {}]", file->source(), p, k);
    auto kept = read_tensor<float>(*file, p + ".kept", DType::F32, kept_t->num_elements());
    auto s = std::make_unique<InputStatistics>(k, !h.empty());
    s->restore(count[0], std::move(h), std::move(abs_sum), std::move(max_abs), std::move(kept),
               std::move(square_sum));
    stats[group] = std::move(s);
  }
  return stats;
}

}  // namespace nibble::quantize
