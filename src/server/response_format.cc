#include "server/response_format.h"

#include "tokenizer/tokenizer.h"

namespace nibble::server {

using nlohmann::json;

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

json finish_reason_json(const ChoiceState& choice) {
  if (choice.aborted) return "abort";
  if (choice.finish) return std::string(choice.finish->name());
  return nullptr;
}

json matched_stop_json(const ChoiceState& choice) {
  if (!choice.finish) return nullptr;
  const auto& matched = choice.finish->matched;
  if (const auto* id = std::get_if<int32_t>(&matched)) return *id;
  if (const auto* text = std::get_if<std::string>(&matched)) return *text;
  return nullptr;
}

std::string token_text(const Tokenizer* tokenizer, int32_t id) {
  if (!tokenizer) return {};
  const int32_t ids[1] = {id};
  return tokenizer->decode(ids, /*skip_special_tokens=*/false);
}

namespace {

json byte_list(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(int(c));
  return bytes;
}

}  // namespace

json chat_logprobs_json(const Tokenizer* tokenizer, const std::vector<TokenLogprob>& logprobs) {
  json content = json::array();
  for (const auto& entry : logprobs) {
    const std::string text = token_text(tokenizer, entry.token);
    json top = json::array();
    for (const auto& [id, logprob] : entry.top) {
      const std::string top_text = token_text(tokenizer, id);
      top.push_back({{"token", top_text}, {"logprob", logprob}, {"bytes", byte_list(top_text)}});
    }
    content.push_back({{"token", text},
                       {"logprob", entry.logprob},
                       {"bytes", byte_list(text)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

json completion_logprobs_json(const Tokenizer* tokenizer, const std::vector<TokenLogprob>& logprobs,
                              int64_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  for (const auto& entry : logprobs) {
    const std::string text = token_text(tokenizer, entry.token);
    tokens.push_back(text);
    token_logprobs.push_back(entry.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : entry.top) top[token_text(tokenizer, id)] = logprob;
    top_logprobs.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(text.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(offsets)}};
}

}  // namespace nibble::server
