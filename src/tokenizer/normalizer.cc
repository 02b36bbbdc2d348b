#include "tokenizer/normalizer.h"

#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

namespace {
using tokenizer_json::Context;

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(text::NormalForm form) : form_(form) {}
  std::string normalize(std::string input) const override { return text::normalize(input, form_); }

 private:
  text::NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string normalize(std::string input) const override { return text::to_lower(input); }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  // `tokenizers` prepends only to non-empty text.
  std::string normalize(std::string input) const override {
    return input.empty() ? input : prefix_ + input;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  std::string normalize(std::string input) const override {
    std::string out;
    size_t previous = 0;
    if (regex_) {
      for (auto [start, end] : regex_->find_all(input)) {
        out.append(input, previous, start - previous);
        out += content_;
        previous = end;
      }
    } else {
      if (literal_.empty()) return input;
      for (size_t at = input.find(literal_); at != std::string::npos;
           at = input.find(literal_, previous)) {
        out.append(input, previous, at - previous);
        out += content_;
        previous = at + literal_.size();
      }
    }
    out.append(input, previous);
    return out;
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string input) const override {
    size_t begin = 0, end = input.size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!text::is_whitespace(text::next_code_point(input, pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<uint8_t>(input[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!text::is_whitespace(text::next_code_point(input, pos))) break;
        end = start;
      }
    }
    return input.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  std::string normalize(std::string input) const override {
    for (const auto& step : steps_) input = step->normalize(std::move(input));
    return input;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};
}  // namespace

// Reads a {"String": ...} / {"Regex": ...} pattern object.
void parse_pattern(const nlohmann::json& spec, const Context& ctx, std::string& literal,
                   std::unique_ptr<Regex>& regex) {
  const auto& pattern = tokenizer_json::require(spec, "pattern", ctx);
  auto pattern_ctx = ctx.child("pattern");
  if (pattern.is_object() && pattern.contains("String")) {
    literal = tokenizer_json::get_string(pattern, "String", pattern_ctx);
  } else if (pattern.is_object() && pattern.contains("Regex")) {
    regex = std::make_unique<Regex>(tokenizer_json::get_string(pattern, "Regex", pattern_ctx),
                                    pattern_ctx.source + ": " + pattern_ctx.path);
  } else {
    pattern_ctx.error("expected {\"String\": ...} or {\"Regex\": ...}");
  }
}

std::unique_ptr<Normalizer> Normalizer::from_json(const nlohmann::json& spec, const Context& ctx) {
  if (spec.is_null()) return nullptr;
  std::string type = tokenizer_json::get_string(spec, "type", ctx);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(tokenizer_json::get_string(spec, "prepend", ctx));
  if (type == "Replace") {
    std::string literal;
    std::unique_ptr<Regex> regex;
    parse_pattern(spec, ctx, literal, regex);
    return std::make_unique<ReplaceNormalizer>(std::move(literal), std::move(regex),
                                               tokenizer_json::get_string(spec, "content", ctx));
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(
        tokenizer_json::get_bool_or(spec, "strip_left", true, ctx),
        tokenizer_json::get_bool_or(spec, "strip_right", true, ctx));
  }
  if (type == "Sequence") {
    const auto& list = tokenizer_json::require(spec, "normalizers", ctx);
    if (!list.is_array()) ctx.child("normalizers").error("expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = from_json(list[i], ctx.child("normalizers").index(i));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  ctx.error(fmt::format("unsupported normalizer type '{}'", type));
}

}  // namespace nibble
