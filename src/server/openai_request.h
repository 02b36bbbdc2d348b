#pragma once
// Reads and validates the bodies of POST /v1/completions and /v1/chat/completions into
// engine requests. Every invalid field is a 400 naming it.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nibble/engine.h"
#include "server/server_context.h"

namespace nibble::server {

struct OpenAIPrompt {
  std::vector<int32_t> ids;
  std::string text;  // the prompt as text, for echo (empty for token prompts)
};

struct OpenAIRequest {
  bool chat = false;
  std::string model;
  std::vector<OpenAIPrompt> prompts;  // chat: exactly one
  SamplingParams sampling;
  int64_t n = 1;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool echo = false;

  // One engine request per (prompt, choice), prompt-major; choice i of a seeded request
  // uses seed + i so that the n choices differ yet stay reproducible.
  std::vector<GenerateRequest> engine_requests() const;
};

OpenAIRequest parse_completion_request(const nlohmann::json& body, ServerContext& context);
OpenAIRequest parse_chat_request(const nlohmann::json& body, ServerContext& context);

// The model name in a request must be the served one (or absent); otherwise 404.
void check_model_name(const nlohmann::json& body, const ServerContext& context);

// Sampling fields shared by the OpenAI routes and SGLang's sampling_params, read from `body`;
// `prefix` names the enclosing object in error messages ("sampling_params.").
void read_sampling_fields(const nlohmann::json& body, const ServerContext& context,
                          SamplingParams& params, const std::string& prefix = {});

}  // namespace nibble::server
