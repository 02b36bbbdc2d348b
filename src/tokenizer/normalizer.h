#pragma once
// The `normalizer` stage of tokenizer.json: text -> text before pre-tokenization.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "tokenizer/json_fields.h"

namespace nibble {
class Regex;

// Reads the "pattern" field ({"String": ...} or {"Regex": ...}) of a Replace or Split spec:
// fills `literal` or `regex`.
void parse_pattern(const nlohmann::json& spec, const tokenizer_json::Context& ctx,
                   std::string& literal, std::unique_ptr<Regex>& regex);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; the result is too.
  virtual std::string normalize(std::string text) const = 0;

  // nullptr for a JSON null.
  static std::unique_ptr<Normalizer> from_json(const nlohmann::json& spec,
                                               const tokenizer_json::Context& ctx);
};

}  // namespace nibble
