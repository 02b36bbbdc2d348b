#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <functional>

#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

namespace {
using tokenizer_json::Context;

// GPT-2's word split, used by the ByteLevel pre-tokenizer when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::vector<SplitSpan> spans_from_matches(const std::vector<std::pair<size_t, size_t>>& matches,
                                          size_t length) {
  std::vector<SplitSpan> spans;
  size_t previous = 0;
  for (auto [start, end] : matches) {
    if (previous != start) spans.push_back({previous, start, false});
    spans.push_back({start, end, true});
    previous = end;
  }
  if (previous != length) spans.push_back({previous, length, false});
  return spans;
}

std::vector<SplitSpan> literal_spans(const std::string& text, const std::string& literal) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (!literal.empty()) {
    for (size_t at = text.find(literal); at != std::string::npos;
         at = text.find(literal, at + literal.size()))
      matches.emplace_back(at, at + literal.size());
  }
  return spans_from_matches(matches, text.size());
}

// Every character satisfying `predicate` is a match of its own.
std::vector<SplitSpan> char_spans(const std::string& text,
                                  const std::function<bool(char32_t)>& predicate) {
  std::vector<std::pair<size_t, size_t>> matches;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t start = pos;
    if (predicate(text::next_code_point(text, pos))) matches.emplace_back(start, pos);
  }
  return spans_from_matches(matches, text.size());
}

void invert(std::vector<SplitSpan>& spans) {
  for (auto& span : spans) span.is_match = !span.is_match;
}

template <typename SpanFn>
void split_all(std::vector<TextPiece>& pieces, SplitBehavior behavior, SpanFn make_spans) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (const auto& piece : pieces) split_piece(piece, make_spans(piece.text), behavior, out);
  pieces = std::move(out);
}

SplitBehavior parse_behavior(const std::string& name, const Context& ctx) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  ctx.child("behavior").error(fmt::format("unknown split behavior '{}'", name));
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::string literal, std::unique_ptr<Regex> regex, SplitBehavior behavior,
                    bool inverted)
      : literal_(std::move(literal)),
        regex_(std::move(regex)),
        behavior_(behavior),
        inverted_(inverted) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, behavior_, [&](const std::string& text) {
      auto spans = regex_ ? spans_from_matches(regex_->find_all(text), text.size())
                          : literal_spans(text, literal_);
      if (inverted_) invert(spans);
      return spans;
    });
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool inverted_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern, "ByteLevel pre-tokenizer")
                         : nullptr) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& piece : pieces)
        if (piece.text.empty() || piece.text[0] != ' ') piece.text = " " + piece.text;
    }
    if (regex_) {
      split_all(pieces, SplitBehavior::Isolated, [&](const std::string& text) {
        return spans_from_matches(regex_->find_all(text), text.size());
      });
    }
    for (auto& piece : pieces) piece.text = byte_level::encode(piece.text);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { Always, First, Never };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), scheme_(scheme), split_(split) {
    text::append_utf8(replacement_text_, replacement);
  }
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (auto& piece : pieces) {
      std::string replaced;
      for (char c : piece.text) {
        if (c == ' ')
          replaced += replacement_text_;
        else
          replaced += c;
      }
      bool starts_with_replacement = replaced.rfind(replacement_text_, 0) == 0;
      bool prepend =
          scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && piece.at_origin);
      if (prepend && !starts_with_replacement) replaced = replacement_text_ + replaced;
      piece.text = std::move(replaced);
    }
    if (split_) {
      split_all(pieces, SplitBehavior::MergedWithNext, [&](const std::string& text) {
        return char_spans(text, [&](char32_t cp) { return cp == replacement_; });
      });
    }
  }

 private:
  char32_t replacement_;
  std::string replacement_text_;
  PrependScheme scheme_;
  bool split_;
};

class PredicatePreTokenizer : public PreTokenizer {
 public:
  PredicatePreTokenizer(std::function<bool(char32_t)> predicate, SplitBehavior behavior)
      : predicate_(std::move(predicate)), behavior_(behavior) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, behavior_,
              [&](const std::string& text) { return char_spans(text, predicate_); });
  }

 private:
  std::function<bool(char32_t)> predicate_;
  SplitBehavior behavior_;
};

// `Whitespace`: keeps runs of word characters and runs of other non-space characters.
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  WhitespacePreTokenizer() : regex_(R"(\w+|[^\w\s]+)", "Whitespace pre-tokenizer") {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, SplitBehavior::Removed, [&](const std::string& text) {
      auto spans = spans_from_matches(regex_.find_all(text), text.size());
      invert(spans);
      return spans;
    });
  }

 private:
  Regex regex_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

char32_t single_char(const std::string& value, const Context& ctx) {
  size_t pos = 0;
  if (value.empty() || !text::is_valid_utf8(value)) ctx.error("expected a single character");
  char32_t cp = text::next_code_point(value, pos);
  if (pos != value.size()) ctx.error("expected a single character");
  return cp;
}
}  // namespace

void split_piece(const TextPiece& piece, std::vector<SplitSpan> spans, SplitBehavior behavior,
                 std::vector<TextPiece>& out) {
  // After this pass, is_match means "remove this span".
  std::vector<SplitSpan> merged;
  switch (behavior) {
    case SplitBehavior::Removed: merged = std::move(spans); break;
    case SplitBehavior::Isolated:
      merged = std::move(spans);
      for (auto& span : merged) span.is_match = false;
      break;
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& span : spans) {
        if (span.is_match == previous_match && !merged.empty())
          merged.back().end = span.end;
        else
          merged.push_back({span.start, span.end, false});
        previous_match = span.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& span : spans) {
        if (span.is_match && !previous_match && !merged.empty())
          merged.back().end = span.end;
        else
          merged.push_back({span.start, span.end, false});
        previous_match = span.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !merged.empty())
          merged.back().start = it->start;
        else
          merged.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
  }
  for (const auto& span : merged) {
    if (span.is_match || span.start == span.end) continue;
    out.push_back(
        {piece.text.substr(span.start, span.end - span.start), piece.at_origin && span.start == 0});
  }
}

std::unique_ptr<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& spec,
                                                      const Context& ctx) {
  if (spec.is_null()) return nullptr;
  std::string type = tokenizer_json::get_string(spec, "type", ctx);
  if (type == "Sequence") {
    const auto& list = tokenizer_json::require(spec, "pretokenizers", ctx);
    if (!list.is_array()) ctx.child("pretokenizers").error("expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = from_json(list[i], ctx.child("pretokenizers").index(i));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    std::string literal;
    std::unique_ptr<Regex> regex;
    parse_pattern(spec, ctx, literal, regex);
    auto behavior = parse_behavior(tokenizer_json::get_string(spec, "behavior", ctx), ctx);
    return std::make_unique<SplitPreTokenizer>(
        std::move(literal), std::move(regex), behavior,
        tokenizer_json::get_bool_or(spec, "invert", false, ctx));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(
        tokenizer_json::get_bool_or(spec, "add_prefix_space", true, ctx),
        tokenizer_json::get_bool_or(spec, "use_regex", true, ctx));
  }
  if (type == "Metaspace") {
    char32_t replacement =
        single_char(tokenizer_json::get_string(spec, "replacement", ctx), ctx.child("replacement"));
    PrependScheme scheme = PrependScheme::Always;
    if (spec.contains("prepend_scheme")) {
      std::string name = tokenizer_json::get_string(spec, "prepend_scheme", ctx);
      if (name == "always")
        scheme = PrependScheme::Always;
      else if (name == "first")
        scheme = PrependScheme::First;
      else if (name == "never")
        scheme = PrependScheme::Never;
      else
        ctx.child("prepend_scheme").error(fmt::format("unknown prepend scheme '{}'", name));
    } else if (!tokenizer_json::get_bool_or(spec, "add_prefix_space", true, ctx)) {
      scheme = PrependScheme::Never;  // the pre-0.19 spelling
    }
    return std::make_unique<MetaspacePreTokenizer>(
        replacement, scheme, tokenizer_json::get_bool_or(spec, "split", true, ctx));
  }
  if (type == "Digits") {
    bool individual = tokenizer_json::get_bool_or(spec, "individual_digits", false, ctx);
    return std::make_unique<PredicatePreTokenizer>(
        text::is_numeric, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }
  if (type == "Punctuation") {
    auto behavior =
        parse_behavior(tokenizer_json::get_string_or(spec, "behavior", "Isolated", ctx), ctx);
    return std::make_unique<PredicatePreTokenizer>(
        [](char32_t cp) {
          return text::is_punctuation(cp) || (cp < 128 && std::ispunct(static_cast<int>(cp)));
        },
        behavior);
  }
  if (type == "WhitespaceSplit")
    return std::make_unique<PredicatePreTokenizer>(text::is_whitespace, SplitBehavior::Removed);
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  ctx.error(fmt::format("unsupported pre_tokenizer type '{}'", type));
}

}  // namespace nibble
