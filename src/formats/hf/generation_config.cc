#include "formats/hf/generation_config.h"

#include <cmath>

#include "core/error.h"
#include "formats/hf/hf_config.h"

namespace nibble {
namespace {

using nlohmann::json;

const json* field(const json& object, const char* key) {
  const auto it = object.find(key);
  // transformers writes null for unset fields.
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> read_number(const json& object, const char* key, const std::string& source) {
  const json* v = field(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>()))
    fail("{}: field '{}' must be a finite number, got {}", source, key, v->dump());
  return v->get<double>();
}

int64_t as_integer(const json& v, const char* key, const std::string& source) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}))
    fail("{}: field '{}' must be an integer, got {}", source, key, v.dump());
  return v.get<int64_t>();
}

std::optional<int64_t> read_integer(const json& object, const char* key,
                                    const std::string& source) {
  const json* v = field(object, key);
  if (v == nullptr) return std::nullopt;
  return as_integer(*v, key, source);
}

}  // namespace

GenerationConfig parse_generation_config(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object())
    fail("{}: generation config must be a JSON object, got {}", source, json.type_name());
  GenerationConfig out;
  out.temperature = read_number(json, "temperature", source);
  out.top_p = read_number(json, "top_p", source);
  out.top_k = read_integer(json, "top_k", source);
  out.min_p = read_number(json, "min_p", source);
  out.repetition_penalty = read_number(json, "repetition_penalty", source);
  out.max_new_tokens = read_integer(json, "max_new_tokens", source);
  if (const auto* v = field(json, "do_sample")) {
    if (!v->is_boolean())
      fail("{}: field 'do_sample' must be true or false, got {}", source, v->dump());
    out.do_sample = v->get<bool>();
  }
  out.bos_token_id = read_integer(json, "bos_token_id", source);
  if (const auto* v = field(json, "eos_token_id")) {
    if (v->is_array()) {
      for (const auto& id : *v) out.eos_token_ids.push_back(as_integer(id, "eos_token_id", source));
    } else {
      out.eos_token_ids.push_back(as_integer(*v, "eos_token_id", source));
    }
  }
  out.pad_token_id = read_integer(json, "pad_token_id", source);

  if (out.temperature && *out.temperature < 0)
    fail("{}: temperature {} must be >= 0", source, *out.temperature);
  if (out.top_p && !(*out.top_p > 0 && *out.top_p <= 1))
    fail("{}: top_p {} must be in (0, 1]", source, *out.top_p);
  if (out.min_p && !(*out.min_p >= 0 && *out.min_p <= 1))
    fail("{}: min_p {} must be in [0, 1]", source, *out.min_p);
  if (out.top_k && *out.top_k < 0) fail("{}: top_k {} must be >= 0", source, *out.top_k);
  if (out.repetition_penalty && *out.repetition_penalty <= 0)
    fail("{}: repetition_penalty {} must be > 0", source, *out.repetition_penalty);
  if (out.max_new_tokens && *out.max_new_tokens < 0)
    fail("{}: max_new_tokens {} must be >= 0", source, *out.max_new_tokens);
  for (int64_t id : out.eos_token_ids)
    if (id < 0) fail("{}: eos_token_id {} must be >= 0", source, id);
  return out;
}

GenerationConfig load_generation_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "generation_config.json" : path;
  if (!std::filesystem::exists(file)) return {};
  return parse_generation_config(read_json_file(file), file.string());
}

}  // namespace nibble
