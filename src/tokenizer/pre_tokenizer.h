#pragma once
// The `pre_tokenizer` stage of tokenizer.json: splits normalized text into the words the
// model tokenizes one by one.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/json_fields.h"

namespace nibble {

struct TextPiece {
  std::string text;
  // True when the piece starts at offset 0 of the original input (Metaspace's "first").
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;

  // nullptr for a JSON null.
  static std::unique_ptr<PreTokenizer> from_json(const nlohmann::json& spec,
                                                 const tokenizer_json::Context& ctx);
};

// How a split keeps the delimiters it found (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct SplitSpan {
  size_t start = 0, end = 0;
  bool is_match = false;
};

// Splits `piece` along `spans` (which cover it in order), applying `behavior`; empty pieces are
// dropped.
void split_piece(const TextPiece& piece, std::vector<SplitSpan> spans, SplitBehavior behavior,
                 std::vector<TextPiece>& out);

}  // namespace nibble
