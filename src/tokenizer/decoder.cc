#include "tokenizer/decoder.h"

#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

namespace {
using tokenizer_json::Context;

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

class ByteLevelDecoder : public Decoder {
 public:
  // A token with any character outside the byte alphabet (an added token such as "<|im_end|>"
  // is inside it; one with CJK text is not) contributes its own UTF-8 bytes.
  void decode_chain(std::vector<std::string>& tokens, DecodeMode mode) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      std::string decoded;
      bool all_mapped = text::is_valid_utf8(token);
      size_t pos = 0;
      while (all_mapped && pos < token.size()) {
        auto byte = byte_level::char_to_byte(text::next_code_point(token, pos));
        if (!byte)
          all_mapped = false;
        else
          decoded.push_back(static_cast<char>(*byte));
      }
      bytes += all_mapped ? decoded : token;
    }
    tokens.assign(1, mode == DecodeMode::Lossy ? text::to_valid_utf8(bytes) : bytes);
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens, DecodeMode) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const auto& token = tokens[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          out += ' ';
          pos += replacement_.size();
        } else {
          out += token[pos++];
        }
      }
      if (i == 0 && strip_first_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens, DecodeMode) const override {
    for (auto& token : tokens) {
      std::string out;
      size_t previous = 0;
      if (regex_ && text::is_valid_utf8(token)) {
        for (auto [start, end] : regex_->find_all(token)) {
          out.append(token, previous, start - previous);
          out += content_;
          previous = end;
        }
      } else if (!regex_ && !literal_.empty()) {
        for (size_t at = token.find(literal_); at != std::string::npos;
             at = token.find(literal_, previous)) {
          out.append(token, previous, at - previous);
          out += content_;
          previous = at + literal_.size();
        }
      }
      out.append(token, previous);
      token = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, DecodeMode mode) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&]() {
      if (pending_count == 0) return;
      if (mode == DecodeMode::Raw || text::is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        // `tokenizers` replaces every byte of an invalid run, not each maximal subpart.
        for (size_t i = 0; i < pending_count; ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
      pending_count = 0;
    };
    for (auto& token : tokens) {
      int byte = parse_byte_token(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

  static int parse_byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
    int value = 0;
    for (int i = 3; i < 5; ++i) {
      char c = token[static_cast<size_t>(i)];
      int digit = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
      if (digit < 0) return -1;
      value = value * 16 + digit;
    }
    return value;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, DecodeMode) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  // Strips up to start_/stop_ copies of the content character from each token's ends.
  void decode_chain(std::vector<std::string>& tokens, DecodeMode) const override {
    for (auto& token : tokens) {
      size_t begin = 0;
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                         begin + content_.size() <= token.size();
           ++i)
        begin += content_.size();
      size_t end = token.size();
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens, DecodeMode mode) const override {
    for (const auto& step : steps_) step->decode_chain(tokens, mode);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};
}  // namespace

std::unique_ptr<Decoder> Decoder::from_json(const nlohmann::json& spec, const Context& ctx) {
  if (spec.is_null()) return nullptr;
  std::string type = tokenizer_json::get_string(spec, "type", ctx);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    bool strip_first = true;
    if (spec.contains("prepend_scheme"))
      strip_first = tokenizer_json::get_string(spec, "prepend_scheme", ctx) != "never";
    else
      strip_first = tokenizer_json::get_bool_or(spec, "add_prefix_space", true, ctx);
    return std::make_unique<MetaspaceDecoder>(tokenizer_json::get_string(spec, "replacement", ctx),
                                              strip_first);
  }
  if (type == "Replace") {
    std::string literal;
    std::unique_ptr<Regex> regex;
    parse_pattern(spec, ctx, literal, regex);
    return std::make_unique<ReplaceDecoder>(std::move(literal), std::move(regex),
                                            tokenizer_json::get_string(spec, "content", ctx));
  }
  if (type == "Strip") {
    std::string content = tokenizer_json::get_string(spec, "content", ctx);
    int64_t start = tokenizer_json::get_int_or(spec, "start", 0, ctx);
    int64_t stop = tokenizer_json::get_int_or(spec, "stop", 0, ctx);
    if (start < 0 || stop < 0) ctx.error("Strip start/stop must be non-negative");
    return std::make_unique<StripDecoder>(std::move(content), static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "Sequence") {
    const auto& list = tokenizer_json::require(spec, "decoders", ctx);
    if (!list.is_array()) ctx.child("decoders").error("expected an array");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = from_json(list[i], ctx.child("decoders").index(i));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  ctx.error(fmt::format("unsupported decoder type '{}'", type));
}

namespace {
std::vector<int32_t> template_special_ids(const nlohmann::json& special_tokens,
                                          const std::string& name, const Context& ctx) {
  if (!special_tokens.is_object() || !special_tokens.contains(name))
    ctx.child("special_tokens").error(fmt::format("no entry for special token '{}'", name));
  const auto& entry = special_tokens[name];
  auto entry_ctx = ctx.child("special_tokens").child(name);
  const auto& ids = tokenizer_json::require(entry, "ids", entry_ctx);
  if (!ids.is_array()) entry_ctx.child("ids").error("expected an array");
  std::vector<int32_t> out;
  for (size_t i = 0; i < ids.size(); ++i)
    out.push_back(tokenizer_json::check_token_id(ids[i], entry_ctx.child("ids").index(i)));
  return out;
}

void append_template(const nlohmann::json& spec, const Context& ctx, SpecialTokenTemplate& out) {
  std::string type = tokenizer_json::get_string(spec, "type", ctx);
  if (type == "TemplateProcessing") {
    const auto& single = tokenizer_json::require(spec, "single", ctx);
    if (!single.is_array()) ctx.child("single").error("expected an array");
    const auto& special_tokens = tokenizer_json::require(spec, "special_tokens", ctx);
    std::vector<int32_t> prefix, suffix;
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const auto& item = single[i];
      auto item_ctx = ctx.child("single").index(i);
      if (item.is_object() && item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.is_object() && item.contains("SpecialToken")) {
        std::string name =
            tokenizer_json::get_string(item["SpecialToken"], "id", item_ctx.child("SpecialToken"));
        auto ids = template_special_ids(special_tokens, name, ctx);
        auto& target = seen_sequence ? suffix : prefix;
        target.insert(target.end(), ids.begin(), ids.end());
      } else {
        item_ctx.error("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    out.prefix.insert(out.prefix.end(), prefix.begin(), prefix.end());
    out.suffix.insert(out.suffix.end(), suffix.begin(), suffix.end());
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto read_pair = [&](const char* key) {
      const auto& pair = tokenizer_json::require(spec, key, ctx);
      if (!pair.is_array() || pair.size() != 2) ctx.child(key).error("expected [token, id]");
      return tokenizer_json::check_token_id(pair[1], ctx.child(key).index(1));
    };
    out.prefix.insert(out.prefix.begin(), read_pair("cls"));
    out.suffix.push_back(read_pair("sep"));
  } else if (type == "Sequence") {
    const auto& list = tokenizer_json::require(spec, "processors", ctx);
    if (!list.is_array()) ctx.child("processors").error("expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      append_template(list[i], ctx.child("processors").index(i), out);
  } else if (type != "ByteLevel") {
    ctx.error(fmt::format("unsupported post_processor type '{}'", type));
  }
}
}  // namespace

SpecialTokenTemplate SpecialTokenTemplate::from_json(const nlohmann::json& spec,
                                                     const Context& ctx) {
  SpecialTokenTemplate result;
  if (!spec.is_null()) append_template(spec, ctx, result);
  return result;
}

}  // namespace nibble
