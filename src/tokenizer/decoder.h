#pragma once
// The `decoder` stage of tokenizer.json (tokens -> text) and the `post_processor` stage
// (which special tokens add_special_tokens puts around the ids).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/json_fields.h"

namespace nibble {

// Raw keeps the decoded bytes as they are (for streaming: a character may be cut between
// tokens); Lossy reproduces `tokenizers`' String output, replacing invalid bytes by U+FFFD.
enum class DecodeMode { Raw, Lossy };

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms the token strings; the result is concatenated by the caller.
  virtual void decode_chain(std::vector<std::string>& tokens, DecodeMode mode) const = 0;

  // nullptr for a JSON null.
  static std::unique_ptr<Decoder> from_json(const nlohmann::json& spec,
                                            const tokenizer_json::Context& ctx);
};

// What the post-processor adds around a single sequence when add_special_tokens is set.
struct SpecialTokenTemplate {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;

  static SpecialTokenTemplate from_json(const nlohmann::json& spec,
                                        const tokenizer_json::Context& ctx);
};

}  // namespace nibble
