#include "runtime/kv_scales.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "formats/hf/hf_config.h"

namespace nibble {
namespace {

std::optional<float> max_of(const Checkpoint& checkpoint, const std::string& name) {
  if (checkpoint.find(name) == nullptr) return std::nullopt;
  const std::vector<float> values = checkpoint.load_f32(name);
  NIBBLE_CHECK(!values.empty(), "{}: KV scale '{}' is empty", checkpoint.source(), name);
  float m = values.front();
  for (float v : values) m = std::max(m, v);
  NIBBLE_CHECK(std::isfinite(m) && m > 0, "{}: KV scale '{}' = {} must be finite and positive",
               checkpoint.source(), name, m);
  return m;
}

std::optional<std::pair<float, float>> layer_scales(const Checkpoint& checkpoint,
                                                    const std::string& attn) {
  const std::pair<const char*, const char*> spellings[] = {
      {"k_scale", "v_scale"},
      {"k_proj.k_scale", "v_proj.v_scale"},
      {"k_proj.output_scale", "v_proj.output_scale"},
      {"attn.k_scale", "attn.v_scale"},
  };
  for (const auto& [k, v] : spellings) {
    auto ks = max_of(checkpoint, attn + k);
    auto vs = max_of(checkpoint, attn + v);
    if (ks && vs) return std::make_pair(*ks, *vs);
    NIBBLE_CHECK(!ks && !vs, "{}: {}{} and {}{} must come together", checkpoint.source(), attn, k,
                 attn, v);
  }
  if (auto both = max_of(checkpoint, attn + "kv_scale")) return std::make_pair(*both, *both);
  return std::nullopt;
}

}  // namespace

KvScales checkpoint_kv_scales(const Checkpoint& checkpoint, int64_t n_layers) {
  KvScales scales;
  int64_t found = 0;
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    auto s = layer_scales(checkpoint, fmt::format("model.layers.{}.self_attn.", layer));
    if (s) ++found;
    scales.push_back(s.value_or(std::make_pair(1.0f, 1.0f)));
  }
  if (found == 0) return {};
  NIBBLE_CHECK(found == n_layers, "{}: KV-cache scales for {} of {} layers; all or none",
               checkpoint.source(), found, n_layers);
  return scales;
}

KvScales read_kv_scales_json(const std::filesystem::path& path, int64_t n_layers) {
  const nlohmann::json j = read_json_file(path);
  const std::string where = path.string();
  NIBBLE_CHECK(j.is_object() && j.contains("kv_cache") && j["kv_cache"].is_object(),
               "{}: --quantization-param-path: no \"kv_cache\" object", where);
  const auto& kv = j["kv_cache"];
  if (kv.contains("dtype")) {
    NIBBLE_CHECK(kv["dtype"].is_string(), "{}: kv_cache.dtype must be a string", where);
    const std::string dtype = kv["dtype"].get<std::string>();
    NIBBLE_CHECK(dtype.starts_with("float8"), "{}: kv_cache.dtype '{}' is not an fp8 type", where,
                 dtype);
  }
  NIBBLE_CHECK(kv.contains("scaling_factor") && kv["scaling_factor"].is_object() &&
                   kv["scaling_factor"].contains("0") && kv["scaling_factor"]["0"].is_object(),
               "{}: kv_cache.scaling_factor.\"0\" (tensor-parallel rank 0) is missing", where);
  const auto& per_layer = kv["scaling_factor"]["0"];
  KvScales scales;
  for (int64_t layer = 0; layer < n_layers; ++layer) {
    const std::string key = std::to_string(layer);
    NIBBLE_CHECK(per_layer.contains(key) && per_layer[key].is_number(),
                 "{}: kv_cache.scaling_factor.\"0\".\"{}\" (layer {}) is missing or not a number",
                 where, key, layer);
    const float s = per_layer[key].get<float>();
    NIBBLE_CHECK(std::isfinite(s) && s > 0, "{}: layer {} scale {} must be finite and positive",
                 where, layer, s);
    scales.emplace_back(s, s);
  }
  return scales;
}

void KvCacheSpec::apply(KvCache& cache) const {
  for (size_t layer = 0; layer < scales.size(); ++layer)
    cache.set_scales(int64_t(layer), scales[layer].first, scales[layer].second);
}

KvCacheSpec resolve_kv_cache(const std::string& kv_cache_dtype, const std::string& param_path,
                             const Checkpoint* raw, int64_t n_layers) {
  KvCacheSpec spec;
  spec.dtype = parse_kv_cache_dtype(kv_cache_dtype);
  const bool fp8 = spec.dtype == KvDType::Fp8E4M3 || spec.dtype == KvDType::Fp8E5M2;
  NIBBLE_CHECK(param_path.empty() || fp8,
               "--quantization-param-path {} holds fp8 KV-cache scales, but --kv-cache-dtype is {}",
               param_path, kv_cache_dtype);
  if (!fp8) return spec;
  if (!param_path.empty()) {
    spec.scales = read_kv_scales_json(param_path, n_layers);
  } else if (raw != nullptr) {
    spec.scales = checkpoint_kv_scales(*raw, n_layers);
  }
  for (size_t layer = 0; layer < spec.scales.size(); ++layer)
    spdlog::debug("kv cache: layer {} k_scale {} v_scale {}", layer, spec.scales[layer].first,
                  spec.scales[layer].second);
  if (spec.scales.empty()) {
    spdlog::warn(
        "--kv-cache-dtype {}: no KV-cache scales in the checkpoint and no "
        "--quantization-param-path; using 1.0, which may lose accuracy",
        kv_cache_dtype);
  }
  return spec;
}

}  // namespace nibble
