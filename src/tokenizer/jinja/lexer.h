#pragma once
// Splits a template into text and tag tokens, applying jinja2's whitespace control exactly
// as transformers configures it (trim_blocks, lstrip_blocks, `-` and `+` markers).
#include <string>
#include <vector>

namespace nibble::jinja {

struct Token {
  enum class Kind {
    Text,
    VarBegin,
    VarEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Int,
    Float,
    Op,
    Eof
  };
  Kind kind;
  std::string text;  // Text contents, identifier, decoded string literal, number or operator
  int line = 1;
  int column = 1;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

std::vector<Token> tokenize(const std::string& source, const LexerOptions& options = {});

}  // namespace nibble::jinja
