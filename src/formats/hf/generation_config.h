#pragma once
// generation_config.json: the model author's default sampling settings. Every field is
// optional; absent fields leave the engine's own defaults in place.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble {

struct GenerationConfig {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> max_new_tokens;
  std::optional<bool> do_sample;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id" may be an int or a list
  std::optional<int64_t> pad_token_id;
};

// Parses a generation_config.json object; `source` names it in errors.
GenerationConfig parse_generation_config(const nlohmann::json& json, const std::string& source);
// `path` is the file or a model directory. A missing file gives all-absent defaults; a
// malformed one throws nibble::Error naming the file and field.
GenerationConfig load_generation_config(const std::filesystem::path& path);

}  // namespace nibble
