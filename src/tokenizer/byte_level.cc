#include "tokenizer/byte_level.h"

#include <vector>

#include "tokenizer/unicode_text.h"

namespace nibble::byte_level {

namespace {
struct Alphabet {
  std::array<std::string, 256> spelled;
  std::array<char32_t, 256> code_point{};
  std::array<int16_t, 256 + 68> byte_of{};
  Alphabet() {
    byte_of.fill(-1);
    // Printable Latin-1 bytes keep their own code point; the rest (controls, space, 0x7F-0xA0,
    // 0xAD) are moved, in byte order, to U+0100 onwards.
    char32_t next_free = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      code_point[b] = printable ? static_cast<char32_t>(b) : next_free++;
      text::append_utf8(spelled[b], code_point[b]);
      byte_of[code_point[b]] = static_cast<int16_t>(b);
    }
  }
};
const Alphabet& alphabet() {
  static const Alphabet instance;
  return instance;
}
}  // namespace

const std::string& byte_to_char(uint8_t byte) { return alphabet().spelled[byte]; }

std::optional<uint8_t> char_to_byte(char32_t cp) {
  const auto& table = alphabet().byte_of;
  if (cp >= table.size() || table[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(table[cp]);
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_char(static_cast<uint8_t>(c));
  return out;
}

bool in_alphabet(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (!char_to_byte(text::next_code_point(text, pos))) return false;
  }
  return true;
}

}  // namespace nibble::byte_level
