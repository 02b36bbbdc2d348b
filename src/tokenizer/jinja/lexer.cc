#include "tokenizer/jinja/lexer.h"

#include <cctype>

#include "core/error.h"
#include "tokenizer/jinja/value.h"

namespace nibble::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

class Lexer {
 public:
  Lexer(const std::string& source, const LexerOptions& options) : src_(source), opt_(options) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t tag = find_tag_start(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      size_t text_start = pos_;
      if (tag == src_.size()) {
        emit_text(text, text_start);
        pos_ = tag;
        break;
      }
      char kind = src_[tag + 1];
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        size_t end = text.find_last_not_of(" \t\n\r\v\f");
        text = end == std::string::npos ? "" : text.substr(0, end + 1);
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          std::string rest = text.substr(l_pos);
          bool all_space = !rest.empty();
          for (char c : rest) all_space = all_space && is_space(c);
          if (all_space) text = text.substr(0, l_pos);
        }
      }
      emit_text(text, text_start);
      pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        line_starting = lex_comment(tag);
      } else {
        line_starting = lex_tag(kind == '{', tag);
      }
    }
    tokens_.push_back({Token::Kind::Eof, "", line_of(src_.size()), col_of(src_.size())});
    return std::move(tokens_);
  }

 private:
  const std::string& src_;
  LexerOptions opt_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;

  int line_of(size_t at) const {
    int line = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) line += src_[i] == '\n';
    return line;
  }
  int col_of(size_t at) const {
    size_t nl = at == 0 ? std::string::npos : src_.rfind('\n', at - 1);
    return static_cast<int>(nl == std::string::npos ? at + 1 : at - nl);
  }
  [[noreturn]] void error(size_t at, const std::string& msg) const {
    fail("chat template syntax error at {}:{}: {}", line_of(at), col_of(at), msg);
  }

  size_t find_tag_start(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    return src_.size();
  }

  void emit_text(const std::string& text, size_t at) {
    if (!text.empty()) tokens_.push_back({Token::Kind::Text, text, line_of(at), col_of(at)});
  }

  // After a block or comment end: trim_blocks drops one newline, `-` drops all whitespace.
  // Returns whether the consumed text ends a line (jinja2's line_starting for lstrip).
  bool after_end(bool dash, bool plus, bool is_block) {
    if (dash) {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
      return pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    if (is_block && !plus && opt_.trim_blocks && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      return true;
    }
    return false;
  }

  bool lex_comment(size_t start) {
    size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) error(start, "missing end of comment tag");
    bool dash = end > pos_ && src_[end - 1] == '-';
    bool plus = end > pos_ && src_[end - 1] == '+';
    pos_ = end + 2;
    return after_end(dash, plus, true);
  }

  bool lex_tag(bool is_var, size_t start) {
    tokens_.push_back({is_var ? Token::Kind::VarBegin : Token::Kind::BlockBegin, "", line_of(start),
                       col_of(start)});
    const char close = is_var ? '}' : '%';
    int depth = 0;  // brackets: `}}` inside a dict literal does not end the tag
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
      if (pos_ >= src_.size())
        error(start, is_var ? "unexpected end of template, expected '}}'"
                            : "unexpected end of template, expected '%}'");
      char c = src_[pos_];
      char n = pos_ + 1 < src_.size() ? src_[pos_ + 1] : '\0';
      char n2 = pos_ + 2 < src_.size() ? src_[pos_ + 2] : '\0';
      if (depth == 0) {
        bool dash = c == '-' && n == close && n2 == '}';
        bool plus = c == '+' && n == close && n2 == '}' && !is_var;
        if (dash || plus || (c == close && n == '}')) {
          size_t at = pos_;
          pos_ += (dash || plus) ? 3 : 2;
          tokens_.push_back(
              {is_var ? Token::Kind::VarEnd : Token::Kind::BlockEnd, "", line_of(at), col_of(at)});
          return after_end(dash, plus, !is_var);
        }
      }
      size_t at = pos_;
      int line = line_of(at), col = col_of(at);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t b = pos_;
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
          ++pos_;
        tokens_.push_back({Token::Kind::Name, src_.substr(b, pos_ - b), line, col});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number(line, col);
      } else if (c == '\'' || c == '"') {
        tokens_.push_back({Token::Kind::String, lex_string(c), line, col});
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                           "/",  "%",  "~",  "(",  ")",  "[",  "]", "{", "}",
                                           ",",  ".",  ":",  "|",  "=",  "<",  ">"};
        std::string op;
        for (const char* candidate : kOps)
          if (src_.compare(pos_, std::char_traits<char>::length(candidate), candidate) == 0) {
            op = candidate;
            break;
          }
        if (op.empty()) error(at, std::string("unexpected character '") + c + "'");
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        pos_ += op.size();
        tokens_.push_back({Token::Kind::Op, op, line, col});
      }
    }
  }

  void lex_number(int line, int col) {
    size_t b = pos_;
    bool is_float = false;
    auto digits = [&] {
      while (pos_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
        ++pos_;
    };
    digits();
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t save = pos_++;
      if (pos_ < src_.size() && (src_[pos_] == '+' || src_[pos_] == '-')) ++pos_;
      if (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) {
        is_float = true;
        digits();
      } else {
        pos_ = save;
      }
    }
    std::string text;
    for (size_t i = b; i < pos_; ++i)
      if (src_[i] != '_') text += src_[i];
    tokens_.push_back({is_float ? Token::Kind::Float : Token::Kind::Int, text, line, col});
  }

  // Python string-literal escapes; unknown escapes keep their backslash, as Python does.
  std::string lex_string(char quote) {
    size_t start = pos_++;
    std::string out;
    while (true) {
      if (pos_ >= src_.size()) error(start, "unexpected end of string");
      char c = src_[pos_++];
      if (c == quote) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= src_.size()) error(start, "unexpected end of string");
      char e = src_[pos_++];
      auto hex = [&](int count) {
        if (pos_ + count > src_.size()) error(start, "truncated \\x/\\u escape");
        uint32_t cp = 0;
        for (int i = 0; i < count; ++i) {
          char h = src_[pos_++];
          if (!std::isxdigit(static_cast<unsigned char>(h))) error(start, "bad hex escape");
          cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                   ? h - '0'
                                                   : std::tolower(h) - 'a' + 10);
        }
        append_utf8(out, cp);
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '0': out += '\0'; break;
        case '\n': break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default: out += '\\'; out += e;
      }
    }
  }
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const LexerOptions& options) {
  // jinja2 normalizes newlines and drops one trailing newline (keep_trailing_newline=False).
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(normalized, options).run();
}

}  // namespace nibble::jinja
