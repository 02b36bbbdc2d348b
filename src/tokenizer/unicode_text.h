#pragma once
// UTF-8 helpers with the exact semantics the `tokenizers` package (Rust) uses: invalid input
// is replaced like String::from_utf8_lossy, character classes follow Rust's char methods.
#include <cstdint>
#include <string>
#include <string_view>

namespace nibble::text {

// Decodes one code point at `pos` of valid UTF-8; advances pos.
char32_t next_code_point(std::string_view s, size_t& pos);
void append_utf8(std::string& out, char32_t cp);

// Length of the valid UTF-8 sequence starting at s[pos], 0 if the bytes there are not a
// complete valid sequence. `incomplete` is set when the bytes are a valid prefix cut by the end.
size_t valid_sequence_length(std::string_view s, size_t pos, bool* incomplete = nullptr);

// Replaces each maximal invalid subpart by U+FFFD (Rust's String::from_utf8_lossy, which is
// also what Python's bytes.decode(errors="replace") does).
std::string to_valid_utf8(std::string_view bytes);
bool is_valid_utf8(std::string_view bytes);

// Rust char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t cp);
// Rust char::is_numeric (general category Nd, Nl or No).
bool is_numeric(char32_t cp);
// Rust regex \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
bool is_word_char(char32_t cp);
// Unicode punctuation (general category P*), as `tokenizers`' Punctuation pre-tokenizer uses.
bool is_punctuation(char32_t cp);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view valid_utf8, NormalForm form);
std::string to_lower(std::string_view valid_utf8);

}  // namespace nibble::text
