#include "tokenizer/synthetic_tokenizer.h"

#include <algorithm>

#include <fmt/format.h>

namespace nibble {

using nlohmann::json;

json byte_fallback_tokenizer_json(const std::vector<std::string>& special_tokens) {
  json vocab = {{"<unk>", 0}};
  json added = json::array();
  int next = 1;
  for (const std::string& token : special_tokens) {
    added.push_back({{"id", next}, {"content", token}, {"special", true}, {"normalized", false}});
    vocab[token] = next++;
  }
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = next++;
  for (const char* piece : {"\u2581", "h", "i", "\u2581h", "\u2581hi", "\u00e9"})
    vocab[piece] = next++;
  const bool has_bos =
      std::find(special_tokens.begin(), special_tokens.end(), "<s>") != special_tokens.end();
  json post_processor = nullptr;
  if (has_bos)
    post_processor = {{"type", "TemplateProcessing"},
                      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                      {"special_tokens",
                       {{"<s>", {{"id", "<s>"}, {"ids", {vocab["<s>"]}}, {"tokens", {"<s>"}}}}}}};
  return {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         json::array(
             {{{"type", "Prepend"}, {"prepend", "\u2581"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", post_processor},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", json::array({"\u2581 h", json::array({"\u2581h", "i"})})},
        {"byte_fallback", true},
        {"fuse_unk", true},
        {"unk_token", "<unk>"}}}};
}

}  // namespace nibble
