// POST /v1/completions and /v1/chat/completions, streaming (SSE) and not, and GET /v1/models.
#include <memory>

#include "model/loader.h"
#include "server/api_error.h"
#include "server/generation_job.h"
#include "server/openai_request.h"
#include "server/request_fields.h"
#include "server/response_format.h"
#include "server/routes.h"
#include "tokenizer/tokenizer.h"

namespace nibble::server {

using nlohmann::json;

namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Everything one OpenAI request needs after submission, shared by its callbacks.
struct OpenAIStream {
  ServerContext* context = nullptr;
  std::shared_ptr<Exchange> exchange;
  OpenAIRequest request;
  std::string id;
  int64_t created = 0;
  std::weak_ptr<GenerationJob> job;
  std::vector<int64_t> text_offsets;  // per choice, for completion logprobs

  const Tokenizer* tokenizer() const { return context->engine().model().tokenizer.get(); }
  const char* object() const { return request.chat ? "chat.completion.chunk" : "text_completion"; }

  json envelope(json choices) const {
    json chunk = {{"id", id},
                  {"object", object()},
                  {"created", created},
                  {"model", context->model_name()},
                  {"choices", std::move(choices)}};
    if (request.include_usage) chunk["usage"] = nullptr;
    return chunk;
  }

  std::string echo_text(size_t index) const {
    const OpenAIPrompt& prompt = request.prompts[index / size_t(request.n)];
    if (!prompt.text.empty() || !tokenizer()) return prompt.text;
    return tokenizer()->decode(prompt.ids, /*skip_special_tokens=*/false);
  }

  void send_delta(size_t index, const std::string& text, const std::vector<TokenLogprob>& logprobs,
                  const ChoiceState* finished) {
    json choice = {{"index", index}};
    if (request.chat) {
      json delta = json::object();
      if (!text.empty()) delta["content"] = text;
      choice["delta"] = std::move(delta);
      choice["logprobs"] = request.logprobs && !logprobs.empty()
                               ? chat_logprobs_json(tokenizer(), logprobs)
                               : json(nullptr);
    } else {
      choice["text"] = text;
      if (request.logprobs && !logprobs.empty()) {
        choice["logprobs"] = completion_logprobs_json(tokenizer(), logprobs, text_offsets[index]);
        for (const auto& entry : logprobs) {
          text_offsets[index] += static_cast<int64_t>(token_text(tokenizer(), entry.token).size());
        }
      } else {
        choice["logprobs"] = nullptr;
      }
    }
    choice["finish_reason"] = finished ? finish_reason_json(*finished) : json(nullptr);
    if (finished) choice["matched_stop"] = matched_stop_json(*finished);
    exchange->send_event(dump_json(envelope(json::array({std::move(choice)}))));
  }

  void on_chunk(size_t index, const StreamChunk& chunk) {
    const auto job_ptr = job.lock();
    if (!job_ptr) return;
    const ChoiceState& state = job_ptr->choices()[index];
    if (!chunk.text.empty() || !chunk.logprobs.empty()) {
      send_delta(index, chunk.text, chunk.logprobs, nullptr);
    }
    if (chunk.finished && !chunk.error) send_delta(index, "", {}, &state);
  }

  void on_done_streaming() {
    const auto job_ptr = job.lock();
    if (job_ptr) {
      if (const auto error = job_ptr->first_error()) {
        // Headers are sent: the error travels as an event, and [DONE] still ends the stream.
        exchange->send_event(dump_json(error_json(500, "internal_error", *error)));
      } else if (request.include_usage) {
        json chunk = envelope(json::array());
        chunk["usage"] = usage_json(job_ptr->usage(size_t(request.n)));
        exchange->send_event(dump_json(chunk));
      }
    }
    exchange->send_event("[DONE]");
    exchange->end_events();
  }

  void on_done_whole() {
    const auto job_ptr = job.lock();
    if (!job_ptr) return;
    if (const auto error = job_ptr->first_error()) {
      context->metrics().count_http_error();
      exchange->respond_json(500, error_json(500, "internal_error", *error));
      return;
    }
    json choices = json::array();
    const auto& states = job_ptr->choices();
    for (size_t i = 0; i < states.size(); ++i) {
      const ChoiceState& state = states[i];
      json choice = {{"index", i}};
      if (request.chat) {
        choice["message"] = {{"role", "assistant"}, {"content", state.text}};
        choice["logprobs"] =
            request.logprobs ? chat_logprobs_json(tokenizer(), state.logprobs) : json(nullptr);
      } else {
        const std::string prefix = request.echo ? echo_text(i) : std::string();
        choice["text"] = prefix + state.text;
        choice["logprobs"] = request.logprobs
                                 ? completion_logprobs_json(tokenizer(), state.logprobs, 0)
                                 : json(nullptr);
      }
      choice["finish_reason"] = finish_reason_json(state);
      choice["matched_stop"] = matched_stop_json(state);
      choices.push_back(std::move(choice));
    }
    json body = {{"id", id},
                 {"object", request.chat ? "chat.completion" : "text_completion"},
                 {"created", created},
                 {"model", context->model_name()},
                 {"choices", std::move(choices)},
                 {"usage", usage_json(job_ptr->usage(size_t(request.n)))}};
    exchange->respond_json(200, body);
  }
};

void serve_openai(ServerContext& context, const std::shared_ptr<Exchange>& exchange, bool chat) {
  const json body = parse_json_object(exchange->request().body());
  auto stream = std::make_shared<OpenAIStream>();
  stream->context = &context;
  stream->exchange = exchange;
  stream->request =
      chat ? parse_chat_request(body, context) : parse_completion_request(body, context);
  stream->created = unix_now();
  auto requests = stream->request.engine_requests();
  stream->text_offsets.assign(requests.size(), 0);
  const bool streaming = stream->request.stream;

  GenerationJob::ChunkFn on_chunk;
  GenerationJob::DoneFn on_done;
  if (streaming) {
    on_chunk = [stream](size_t index, const StreamChunk& chunk) { stream->on_chunk(index, chunk); };
    on_done = [stream] { stream->on_done_streaming(); };
  } else {
    on_done = [stream] { stream->on_done_whole(); };
  }
  auto job = GenerationJob::start(context, exchange, std::move(requests), std::move(on_chunk),
                                  std::move(on_done));
  stream->job = job;
  stream->id = (chat ? "chatcmpl-" : "cmpl-") + job->id();
  if (!streaming) return;
  exchange->start_events();
  // The first chunk of each chat choice carries the role, as OpenAI's does.
  for (size_t i = 0; i < job->choices().size(); ++i) {
    if (chat) {
      json choice = {{"index", i},
                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                     {"logprobs", nullptr},
                     {"finish_reason", nullptr}};
      exchange->send_event(dump_json(stream->envelope(json::array({std::move(choice)}))));
    } else if (stream->request.echo) {
      stream->send_delta(i, stream->echo_text(i), {}, nullptr);
    }
  }
}

}  // namespace

void handle_completions(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  serve_openai(context, exchange, /*chat=*/false);
}

void handle_chat_completions(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  serve_openai(context, exchange, /*chat=*/true);
}

void handle_models(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  json model = {{"id", context.model_name()},        {"object", "model"},
                {"created", context.created_unix()}, {"owned_by", "nibble"},
                {"root", context.model_name()},      {"max_model_len", context.context_length()}};
  exchange->respond_json(200, {{"object", "list"}, {"data", json::array({std::move(model)})}});
}

}  // namespace nibble::server
