#pragma once
// GPT-2's byte <-> unicode alphabet: every byte becomes a printable character so that a
// byte-level vocabulary can be stored as text (0x20 ' ' becomes 'Ġ', 0x0A becomes 'Ċ').
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nibble::byte_level {

// The character (as UTF-8) that stands for `byte`.
const std::string& byte_to_char(uint8_t byte);
// The byte a character of the alphabet stands for; nullopt for a character outside it.
std::optional<uint8_t> char_to_byte(char32_t cp);
// Every byte of `bytes` spelled in the alphabet.
std::string encode(std::string_view bytes);
// True if every character of the valid UTF-8 `text` belongs to the alphabet.
bool in_alphabet(std::string_view text);

}  // namespace nibble::byte_level
