#pragma once
// transformers' config.json <-> ModelConfig. Defaults for absent keys are those of the
// transformers configuration class of each model_type, so a config loads here exactly as it
// loads in transformers (and therefore in vLLM / SGLang).
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/model_config.h"

namespace nibble {

// Reads and parses a JSON file; errors name the file (and the parse position).
nlohmann::json read_json_file(const std::filesystem::path& path);

// "llama", "mistral", "qwen2", "qwen3".
const std::vector<std::string_view>& supported_hf_model_types();

// Parses a config.json object. `source` names it in errors. The result is validated.
ModelConfig parse_hf_config(const nlohmann::json& config, const std::string& source);
// `path` is a config.json file or a directory holding one.
ModelConfig load_hf_config(const std::filesystem::path& path);

// The reverse: a config.json that transformers (4.x and 5.x) loads into the same architecture.
// Rope settings use the legacy top-level "rope_theta" / "rope_scaling" keys, which both read.
nlohmann::json hf_config_to_json(const ModelConfig& config);

}  // namespace nibble
