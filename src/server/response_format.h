#pragma once
// JSON pieces shared by the OpenAI and SGLang routes: usage, finish reasons, logprobs.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nibble/engine.h"
#include "server/generation_job.h"

namespace nibble {
class Tokenizer;
}

namespace nibble::server {

nlohmann::json usage_json(const Usage& usage);

// "stop", "length", or "abort" for a cancelled request.
nlohmann::json finish_reason_json(const ChoiceState& choice);
// SGLang's matched_stop: the stop token id, the stop string, or null.
nlohmann::json matched_stop_json(const ChoiceState& choice);

// The text of one token as the client sees it in logprobs.
std::string token_text(const Tokenizer* tokenizer, int32_t id);

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
nlohmann::json chat_logprobs_json(const Tokenizer* tokenizer,
                                  const std::vector<TokenLogprob>& logprobs);
// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
nlohmann::json completion_logprobs_json(const Tokenizer* tokenizer,
                                        const std::vector<TokenLogprob>& logprobs,
                                        int64_t text_offset);

}  // namespace nibble::server
