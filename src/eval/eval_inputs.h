#pragma once
// Where evaluation data comes from: --data-dir, else $NIBBLE_DATA (the folder holding
// text/wikitext-2-raw-test.txt and eval/*.jsonl); data is never bundled with nibble.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace nibble {
class Tokenizer;
}

namespace nibble::eval {

// Throws nibble::Error saying how to point at the data when neither is set.
std::filesystem::path resolve_data_dir(const std::string& flag);

// --file if given, else <data>/text/wikitext-2-raw-test.txt.
std::filesystem::path resolve_text_file(const std::string& file_flag,
                                        const std::string& data_dir_flag);

// The file's bytes exactly as stored (CRLF kept, .bz2 unpacked), tokenized in one piece.
// add_special_tokens adds what the tokenizer's post-processor adds (a BOS for Llama-2-style
// tokenizers; nothing for SmolLM2).
std::vector<int32_t> tokenize_file(const Tokenizer& tokenizer, const std::filesystem::path& path,
                                   bool add_special_tokens);

}  // namespace nibble::eval
