#include "tokenizer/hf_tokenizer.h"

#include <fstream>
#include <sstream>

#include "formats/gguf/gguf_file.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

using tokenizer_json::Context;

HfTokenizer::HfTokenizer(nlohmann::json spec, const std::string& source, nlohmann::json config)
    : spec_(std::move(spec)), config_(std::move(config)) {
  Context root{source, ""};
  if (!spec_.is_object()) root.error("expected a JSON object");
  const auto& model = tokenizer_json::require(spec_, "model", root);
  auto model_ctx = root.child("model");
  std::string model_type = tokenizer_json::get_string_or(
      model, "type", model.is_object() && model.contains("merges") ? "BPE" : "", model_ctx);
  if (model_type != "BPE")
    model_ctx.error(fmt::format("unsupported model type '{}' (nibble supports BPE)", model_type));
  model_ = BpeModel::from_json(model, model_ctx);

  auto field = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null_json;
    auto it = spec_.find(key);
    return it == spec_.end() ? null_json : *it;
  };
  normalizer_ = Normalizer::from_json(field("normalizer"), root.child("normalizer"));
  pre_tokenizer_ = PreTokenizer::from_json(field("pre_tokenizer"), root.child("pre_tokenizer"));
  decoder_ = Decoder::from_json(field("decoder"), root.child("decoder"));
  template_ =
      SpecialTokenTemplate::from_json(field("post_processor"), root.child("post_processor"));

  vocab_size_ = model_->id_limit();
  const auto& added = field("added_tokens");
  if (!added.is_null() && !added.is_array()) root.child("added_tokens").error("expected an array");
  for (size_t i = 0; !added.is_null() && i < added.size(); ++i) {
    auto ctx = root.child("added_tokens").index(i);
    const auto& entry = added[i];
    AddedToken token;
    token.id =
        tokenizer_json::check_token_id(tokenizer_json::require(entry, "id", ctx), ctx.child("id"));
    token.content = tokenizer_json::get_string(entry, "content", ctx);
    token.single_word = tokenizer_json::get_bool_or(entry, "single_word", false, ctx);
    token.lstrip = tokenizer_json::get_bool_or(entry, "lstrip", false, ctx);
    token.rstrip = tokenizer_json::get_bool_or(entry, "rstrip", false, ctx);
    token.special = tokenizer_json::get_bool_or(entry, "special", false, ctx);
    token.normalized = tokenizer_json::get_bool_or(entry, "normalized", !token.special, ctx);
    if (token.content.empty()) continue;
    if (!text::is_valid_utf8(token.content)) ctx.child("content").error("not valid UTF-8");
    if (added_by_id_.count(token.id)) {
      // A later entry for the same id replaces the earlier one, as in `tokenizers`.
      added_tokens_[added_by_id_[token.id]] = token;
    } else {
      added_by_id_[token.id] = added_tokens_.size();
      added_tokens_.push_back(token);
    }
    vocab_size_ = std::max<int64_t>(vocab_size_, token.id + 1);
  }
  for (const auto& token : added_tokens_) added_by_content_[token.content] = token.id;

  // Special tokens are matched first, then the others, each group in file order.
  std::vector<std::string> raw_patterns, normalized_patterns;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& token : added_tokens_) {
      if (token.special != (pass == 0)) continue;
      if (token.normalized) {
        normalized_tokens_.push_back(&token);
        normalized_patterns.push_back(normalizer_ ? normalizer_->normalize(token.content)
                                                  : token.content);
      } else {
        raw_tokens_.push_back(&token);
        raw_patterns.push_back(token.content);
      }
    }
  }
  raw_matcher_.build(raw_patterns);
  normalized_matcher_.build(normalized_patterns);

  for (int32_t id : template_.prefix)
    if (id >= vocab_size_)
      root.child("post_processor")
          .error(fmt::format("token id {} is out of range (vocab size {})", id, vocab_size_));
  for (int32_t id : template_.suffix)
    if (id >= vocab_size_)
      root.child("post_processor")
          .error(fmt::format("token id {} is out of range (vocab size {})", id, vocab_size_));

  bos_id_ = resolve_config_token("bos_token");
  eos_id_ = resolve_config_token("eos_token");
  if (!bos_id_ && !template_.prefix.empty()) bos_id_ = template_.prefix.front();
  if (!eos_id_ && !template_.suffix.empty()) eos_id_ = template_.suffix.back();
}

std::optional<int32_t> HfTokenizer::resolve_config_token(const char* key) const {
  if (!config_.is_object()) return std::nullopt;
  auto it = config_.find(key);
  if (it == config_.end() || it->is_null()) return std::nullopt;
  std::string content;
  if (it->is_string())
    content = it->get<std::string>();
  else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    content = (*it)["content"].get<std::string>();
  else
    fail("tokenizer_config.json: {}: expected a string or {{\"content\": ...}}", key);
  auto id = token_to_id(content);
  if (!id) fail("tokenizer_config.json: {} '{}' is not in the vocabulary", key, content);
  return id;
}

void HfTokenizer::encode_text(const Segment& segment, std::vector<int32_t>& out) const {
  std::string normalized = normalizer_ ? normalizer_->normalize(segment.text) : segment.text;
  std::vector<Segment> parts;
  split_on_added_tokens(normalized, segment.at_origin, normalized_matcher_, normalized_tokens_,
                        parts);
  for (auto& part : parts) {
    if (part.token_id) {
      out.push_back(*part.token_id);
      continue;
    }
    if (part.text.empty()) continue;
    std::vector<TextPiece> pieces{{std::move(part.text), part.at_origin}};
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
    for (const auto& piece : pieces) model_->tokenize(piece.text, out);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string valid = text::is_valid_utf8(text) ? std::string(text) : text::to_valid_utf8(text);
  std::vector<Segment> segments;
  split_on_added_tokens(valid, true, raw_matcher_, raw_tokens_, segments);
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = template_.prefix;
  for (const auto& segment : segments) {
    if (segment.token_id)
      ids.push_back(*segment.token_id);
    else
      encode_text(segment, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), template_.suffix.begin(), template_.suffix.end());
  return ids;
}

std::string HfTokenizer::decode_with(std::span<const int32_t> ids, bool skip_special_tokens,
                                     DecodeMode mode) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto added = added_by_id_.find(id);
    if (added != added_by_id_.end()) {
      const auto& token = added_tokens_[added->second];
      if (skip_special_tokens && token.special) continue;
      tokens.push_back(token.content);
    } else if (const std::string* token = model_->id_to_token(id)) {
      tokens.push_back(*token);
    }
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  decoder_->decode_chain(tokens, mode);
  std::string out;
  for (const auto& token : tokens) out += token;
  return out;
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return decode_with(ids, skip_special_tokens, DecodeMode::Raw);
}

std::string HfTokenizer::decode_text(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return text::to_valid_utf8(decode_with(ids, skip_special_tokens, DecodeMode::Lossy));
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  auto it = added_by_content_.find(std::string(token));
  if (it != added_by_content_.end()) return it->second;
  return model_->token_to_id(token);
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  auto added = added_by_id_.find(id);
  if (added != added_by_id_.end()) return added_tokens_[added->second].content;
  if (const std::string* token = model_->id_to_token(id)) return *token;
  fail("token id {} is out of range (vocab size {})", id, vocab_size_);
}

bool HfTokenizer::is_special(int32_t id) const {
  auto added = added_by_id_.find(id);
  return added != added_by_id_.end() && added_tokens_[added->second].special;
}

// ---- factories -------------------------------------------------------------------------

std::string Tokenizer::decode_text(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return text::to_valid_utf8(decode(ids, skip_special_tokens));
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(const nlohmann::json& tokenizer_json,
                                                const std::string& source) {
  return std::make_unique<HfTokenizer>(tokenizer_json, source, nlohmann::json::object());
}

namespace {
nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto parsed = nlohmann::json::parse(buffer.str(), nullptr, false);
  if (parsed.is_discarded()) fail("{}: not valid JSON", path.string());
  return parsed;
}
}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::filesystem::path& dir) {
  auto json_path = dir / "tokenizer.json";
  if (!std::filesystem::exists(json_path))
    fail("{}: no tokenizer.json (nibble reads the HF fast-tokenizer format)", dir.string());
  auto spec = read_json_file(json_path);
  nlohmann::json config = nlohmann::json::object();
  auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    auto full = read_json_file(config_path);
    // Only the fields that describe the tokenizer itself; the chat template lives elsewhere.
    for (const char* key :
         {"bos_token", "eos_token", "unk_token", "pad_token", "add_bos_token", "add_eos_token"})
      if (full.is_object() && full.contains(key)) config[key] = full[key];
  }
  return std::make_unique<HfTokenizer>(std::move(spec), json_path.string(), std::move(config));
}

std::unique_ptr<Tokenizer> Tokenizer::from_path(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) return from_hf_dir(path);
  if (!std::filesystem::exists(path)) fail("{}: no such file or directory", path.string());
  if (path.extension() == ".gguf") return from_gguf(*gguf::GgufFile::open(path));
  return std::make_unique<HfTokenizer>(read_json_file(path), path.string(),
                                       nlohmann::json::object());
}

}  // namespace nibble
