#include "server/openai_request.h"

#include <limits>

#include "core/error.h"
#include "model/loader.h"
#include "runtime/chat_prompt.h"
#include "server/api_error.h"
#include "server/request_fields.h"

namespace nibble::server {

using nlohmann::json;

namespace {

constexpr int64_t kCompletionDefaultMaxTokens = 16;  // OpenAI's default for /v1/completions
constexpr int32_t kMaxTopLogprobs = 20;

void read_common_sampling(const json& body, ServerContext& context, OpenAIRequest& request) {
  read_sampling_fields(body, context, request.sampling);
  request.sampling.stop = read_stop(body, "stop");
  request.n = read_integer(body, "n", 1, context.config().max_choices).value_or(1);
  request.stream = read_bool(body, "stream").value_or(false);
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) invalid_param("stream_options", "stream_options must be an object");
    reject_unknown_fields(*options, {"include_usage", "continuous_usage_stats"}, "stream_options");
    if (!request.stream) {
      invalid_param("stream_options", "stream_options is only allowed when stream is true");
    }
    request.include_usage =
        read_bool(*options, "include_usage", "stream_options.include_usage").value_or(false);
  }
  if (const json* bias = field(body, "logit_bias"); bias && !bias->empty()) {
    invalid_param("logit_bias", "logit_bias is not supported");
  }
  if (const json* user = field(body, "user"); user && !user->is_string()) {
    invalid_param("user", "user must be a string");
  }
}

// Fixes max_new_tokens against the context window: an explicit value that does not fit is an
// error (never silently clamped); a default is clamped to the room left.
void resolve_max_tokens(std::optional<int64_t> requested, int64_t default_tokens, const char* param,
                        ServerContext& context, OpenAIRequest& request) {
  const int64_t ctx = context.context_length();
  int64_t longest = 0;
  for (const auto& prompt : request.prompts)
    longest = std::max<int64_t>(longest, prompt.ids.size());
  if (longest >= ctx) {
    invalid_param(request.chat ? "messages" : "prompt",
                  "this model's maximum context length is {} tokens, but the prompt has {} tokens",
                  ctx, longest);
  }
  if (requested) {
    if (longest + *requested > ctx) {
      invalid_param(param,
                    "this model's maximum context length is {} tokens. However, you requested {} "
                    "tokens ({} in the prompt, {} for the completion); reduce the prompt or {}",
                    ctx, longest + *requested, longest, *requested, param);
    }
    request.sampling.max_new_tokens = *requested;
  } else {
    request.sampling.max_new_tokens = std::min(default_tokens, ctx - longest);
  }
}

std::vector<int32_t> encode_prompt(ServerContext& context, const std::string& text,
                                   const std::string& param) {
  if (text.empty()) invalid_param(param, "{} must not be empty", param);
  return context.tokenizer().encode(text, /*add_special_tokens=*/true);
}

std::string message_content(const json& message, size_t index, const std::string& role) {
  const std::string param = fmt::format("messages[{}].content", index);
  const json* content = field(message, "content");
  if (!content) {
    if (role == "assistant") return {};
    invalid_param(param, "{} is required for role '{}'", param, role);
  }
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    invalid_param(param, "{} must be a string or a list of content parts, got {}", param,
                  content->type_name());
  }
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string part_param = fmt::format("{}[{}]", param, i);
    if (!part.is_object()) invalid_param(part_param, "{} must be an object", part_param);
    const auto type = read_string(part, "type", part_param + ".type");
    if (type != "text") {
      invalid_param(part_param, "{}: only text content parts are supported, got type '{}'",
                    part_param, type.value_or(""));
    }
    const auto part_text = read_string(part, "text", part_param + ".text");
    if (!part_text) invalid_param(part_param + ".text", "{}.text is required", part_param);
    text += *part_text;
  }
  return text;
}

json validated_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) invalid_param("messages", "messages is required");
  if (!messages->is_array()) {
    invalid_param("messages", "messages must be a list, got {}", messages->type_name());
  }
  if (messages->empty()) invalid_param("messages", "messages must not be empty");
  json clean = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!message.is_object()) {
      invalid_param(param, "{} must be an object, got {}", param, message.type_name());
    }
    const auto role = read_string(message, "role", param + ".role");
    if (!role) invalid_param(param + ".role", "{}.role is required", param);
    if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" &&
        *role != "tool") {
      invalid_param(param + ".role",
                    "{}.role must be one of system, developer, user, assistant, tool; got '{}'",
                    param, *role);
    }
    if (const json* calls = field(message, "tool_calls"); calls && !calls->empty()) {
      invalid_param(param + ".tool_calls", "tool calls are not supported");
    }
    // Templates know "system"; OpenAI's newer "developer" role means the same.
    clean.push_back({{"role", *role == "developer" ? "system" : *role},
                     {"content", message_content(message, i, *role)}});
  }
  return clean;
}

}  // namespace

void read_sampling_fields(const json& body, const ServerContext& context, SamplingParams& p,
                          const std::string& prefix) {
  const GenerationDefaults& defaults = context.engine().model().generation;
  const auto name = [&](const char* field_name) { return prefix + field_name; };
  p.temperature = static_cast<float>(read_number(body, "temperature", 0.0, 2.0, name("temperature"))
                                         .value_or(defaults.temperature.value_or(1.0f)));
  const auto top_p = read_number(body, "top_p", 0.0, 1.0, name("top_p"));
  if (top_p && *top_p <= 0.0) invalid_param(name("top_p"), "{} must be in (0, 1]", name("top_p"));
  p.top_p = static_cast<float>(top_p.value_or(defaults.top_p.value_or(1.0f)));
  const int64_t top_k = read_integer(body, "top_k", -1, context.vocab_size(), name("top_k"))
                            .value_or(defaults.top_k.value_or(-1));
  p.top_k = top_k == 0 ? -1 : static_cast<int32_t>(top_k);
  p.min_p = static_cast<float>(
      read_number(body, "min_p", 0.0, 1.0, name("min_p")).value_or(defaults.min_p.value_or(0.0f)));
  p.presence_penalty = static_cast<float>(
      read_number(body, "presence_penalty", -2.0, 2.0, name("presence_penalty")).value_or(0.0));
  p.frequency_penalty = static_cast<float>(
      read_number(body, "frequency_penalty", -2.0, 2.0, name("frequency_penalty")).value_or(0.0));
  const auto repetition =
      read_number(body, "repetition_penalty", 0.0, 2.0, name("repetition_penalty"));
  if (repetition && *repetition <= 0.0) {
    invalid_param(name("repetition_penalty"), "{} must be in (0, 2]", name("repetition_penalty"));
  }
  p.repetition_penalty =
      static_cast<float>(repetition.value_or(defaults.repetition_penalty.value_or(1.0f)));
  if (const auto seed = read_integer(body, "seed", std::numeric_limits<int64_t>::min(),
                                     std::numeric_limits<int64_t>::max(), name("seed"))) {
    p.seed = static_cast<uint64_t>(*seed);
  }
  if (const json* ids = field(body, "stop_token_ids")) {
    p.stop_token_ids = read_token_ids(*ids, context.vocab_size(), name("stop_token_ids"));
  }
  p.ignore_eos = read_bool(body, "ignore_eos", name("ignore_eos")).value_or(false);
  p.skip_special_tokens =
      read_bool(body, "skip_special_tokens", name("skip_special_tokens")).value_or(true);
}

void check_model_name(const json& body, const ServerContext& context) {
  const auto model = read_string(body, "model");
  if (model && !model->empty() && *model != context.model_name() && *model != "default") {
    throw ApiError(404, "invalid_request_error",
                   fmt::format("the model '{}' does not exist; this server serves '{}'", *model,
                               context.model_name()),
                   "model", "model_not_found");
  }
}

std::vector<GenerateRequest> OpenAIRequest::engine_requests() const {
  std::vector<GenerateRequest> requests;
  for (const auto& prompt : prompts) {
    for (int64_t i = 0; i < n; ++i) {
      GenerateRequest request;
      request.input_ids = prompt.ids;
      request.sampling = sampling;
      if (sampling.seed) request.sampling.seed = *sampling.seed + static_cast<uint64_t>(i);
      request.return_logprob = logprobs;
      request.top_logprobs_num = top_logprobs;
      requests.push_back(std::move(request));
    }
  }
  return requests;
}

OpenAIRequest parse_completion_request(const json& body, ServerContext& context) {
  reject_unknown_fields(body, {"model",
                               "prompt",
                               "suffix",
                               "max_tokens",
                               "max_completion_tokens",
                               "temperature",
                               "top_p",
                               "top_k",
                               "min_p",
                               "n",
                               "best_of",
                               "stream",
                               "stream_options",
                               "logprobs",
                               "echo",
                               "stop",
                               "stop_token_ids",
                               "presence_penalty",
                               "frequency_penalty",
                               "repetition_penalty",
                               "logit_bias",
                               "user",
                               "seed",
                               "ignore_eos",
                               "skip_special_tokens"});
  check_model_name(body, context);
  OpenAIRequest request;
  read_common_sampling(body, context, request);
  if (const auto best_of = read_integer(body, "best_of", 1, context.config().max_choices);
      best_of && *best_of != request.n) {
    invalid_param("best_of", "best_of other than n is not supported");
  }
  if (const auto suffix = read_string(body, "suffix"); suffix && !suffix->empty()) {
    invalid_param("suffix", "suffix is not supported");
  }
  if (const auto logprobs = read_integer(body, "logprobs", 0, kMaxTopLogprobs)) {
    request.logprobs = true;
    request.top_logprobs = static_cast<int32_t>(*logprobs);
  }
  request.echo = read_bool(body, "echo").value_or(false);
  if (request.echo && request.logprobs) {
    invalid_param("echo", "echo together with logprobs is not supported");
  }

  const json* prompt = field(body, "prompt");
  if (!prompt) invalid_param("prompt", "prompt is required");
  const int64_t vocab = context.vocab_size();
  if (prompt->is_string()) {
    request.prompts.push_back(
        {encode_prompt(context, prompt->get<std::string>(), "prompt"), prompt->get<std::string>()});
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
    request.prompts.push_back({read_token_ids(*prompt, vocab, "prompt"), {}});
  } else if (prompt->is_array() && !prompt->empty()) {
    if (static_cast<int64_t>(prompt->size()) * request.n > context.config().max_choices) {
      invalid_param("prompt", "{} prompts times n = {} exceeds the limit of {} choices",
                    prompt->size(), request.n, context.config().max_choices);
    }
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& item = (*prompt)[i];
      const std::string param = fmt::format("prompt[{}]", i);
      if (item.is_string()) {
        request.prompts.push_back(
            {encode_prompt(context, item.get<std::string>(), param), item.get<std::string>()});
      } else if (item.is_array()) {
        request.prompts.push_back({read_token_ids(item, vocab, param), {}});
      } else {
        invalid_param(param, "{} must be a string or a list of token ids", param);
      }
    }
  } else {
    invalid_param("prompt",
                  "prompt must be a non-empty string, list of strings, or list of token ids");
  }
  for (size_t i = 0; i < request.prompts.size(); ++i) {
    if (request.prompts[i].ids.empty()) invalid_param("prompt", "prompt must not be empty");
  }
  auto max_tokens = read_integer(body, "max_tokens", 1, std::numeric_limits<int64_t>::max());
  const char* param = "max_tokens";
  if (!max_tokens) {
    max_tokens =
        read_integer(body, "max_completion_tokens", 1, std::numeric_limits<int64_t>::max());
    param = "max_completion_tokens";
  }
  resolve_max_tokens(max_tokens, kCompletionDefaultMaxTokens, param, context, request);
  return request;
}

OpenAIRequest parse_chat_request(const json& body, ServerContext& context) {
  reject_unknown_fields(body, {"model",
                               "messages",
                               "max_tokens",
                               "max_completion_tokens",
                               "temperature",
                               "top_p",
                               "top_k",
                               "min_p",
                               "n",
                               "stream",
                               "stream_options",
                               "logprobs",
                               "top_logprobs",
                               "stop",
                               "stop_token_ids",
                               "presence_penalty",
                               "frequency_penalty",
                               "repetition_penalty",
                               "logit_bias",
                               "user",
                               "seed",
                               "ignore_eos",
                               "skip_special_tokens",
                               "response_format",
                               "tools",
                               "tool_choice",
                               "parallel_tool_calls",
                               "metadata",
                               "store",
                               "service_tier"});
  check_model_name(body, context);
  OpenAIRequest request;
  request.chat = true;
  read_common_sampling(body, context, request);
  request.logprobs = read_bool(body, "logprobs").value_or(false);
  if (const auto top = read_integer(body, "top_logprobs", 0, kMaxTopLogprobs)) {
    if (!request.logprobs) invalid_param("top_logprobs", "top_logprobs requires logprobs: true");
    request.top_logprobs = static_cast<int32_t>(*top);
  }
  if (const json* format = field(body, "response_format")) {
    if (!format->is_object() || format->value("type", "") != "text") {
      invalid_param("response_format", "only response_format {{\"type\": \"text\"}} is supported");
    }
  }
  if (const json* tools = field(body, "tools"); tools && !tools->empty()) {
    invalid_param("tools", "tools are not supported");
  }
  if (const json* choice = field(body, "tool_choice"); choice && *choice != "none") {
    invalid_param("tool_choice", "tool_choice other than \"none\" is not supported");
  }
  const json messages = validated_messages(body);
  if (context.engine().model().chat_template.empty()) {
    invalid_param("messages",
                  "the model has no chat template; start the server with "
                  "--chat-template FILE or use /v1/completions");
  }
  context.tokenizer();  // 400 early when the model has none
  OpenAIPrompt prompt;
  try {
    prompt.ids =
        chat_prompt_ids(context.engine().model(), messages, /*add_generation_prompt=*/true);
  } catch (const Error& error) {
    invalid_param("messages", "cannot apply the chat template: {}", error.what());
  }
  request.prompts.push_back(std::move(prompt));
  auto max_tokens =
      read_integer(body, "max_completion_tokens", 1, std::numeric_limits<int64_t>::max());
  const char* param = "max_completion_tokens";
  if (!max_tokens) {
    max_tokens = read_integer(body, "max_tokens", 1, std::numeric_limits<int64_t>::max());
    param = "max_tokens";
  }
  resolve_max_tokens(max_tokens, std::numeric_limits<int64_t>::max(), param, context, request);
  return request;
}

}  // namespace nibble::server
