#pragma once
// A small tokenizer.json for models built in code (tests, fuzzers): SentencePiece-style BPE
// with byte fallback, so every UTF-8 string encodes, and a vocabulary small enough that a
// random model over it stays tiny.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble {

// Ids: 0 "<unk>", 1..n `special_tokens` (added, special), then the 256 byte tokens <0x00>..<0xFF>,
// then the pieces "▁", "h", "i", "▁h", "▁hi", "é" (merges "▁ h" in string form, "▁h i" in
// the older list form: both spellings tokenizers accepts). "<s>", if among the specials, is
// prepended by the post-processor.
nlohmann::json byte_fallback_tokenizer_json(const std::vector<std::string>& special_tokens);

}  // namespace nibble
