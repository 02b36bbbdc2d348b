// SGLang's native routes: POST /generate, the health probes, model/server info, flush_cache,
// and the Prometheus /metrics page.
#include <limits>
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

constexpr int64_t kDefaultMaxNewTokens = 128;  // SGLang's default

struct NativeRequest {
  std::vector<GenerateRequest> requests;
  bool batch = false;  // "text"/"input_ids" given as a list of prompts
  bool stream = false;
  bool return_logprob = false;
};

SamplingParams read_native_sampling(const json& body, ServerContext& context) {
  SamplingParams params;
  const json* sampling = field(body, "sampling_params");
  const json empty = json::object();
  if (sampling && !sampling->is_object()) {
    invalid_param("sampling_params", "sampling_params must be an object");
  }
  const json& p = sampling ? *sampling : empty;
  reject_unknown_fields(
      p,
      {"max_new_tokens", "temperature", "top_p", "top_k", "min_p", "frequency_penalty",
       "presence_penalty", "repetition_penalty", "stop", "stop_token_ids", "ignore_eos",
       "skip_special_tokens", "n", "sampling_seed", "seed", "min_new_tokens", "no_stop_trim",
       "spaces_between_special_tokens"},
      "sampling_params");
  read_sampling_fields(p, context, params, "sampling_params.");
  if (const auto seed =
          read_integer(p, "sampling_seed", std::numeric_limits<int64_t>::min(),
                       std::numeric_limits<int64_t>::max(), "sampling_params.sampling_seed")) {
    params.seed = static_cast<uint64_t>(*seed);
  }
  params.stop = read_stop(p, "stop", "sampling_params.stop");
  params.max_new_tokens = read_integer(p, "max_new_tokens", 0, std::numeric_limits<int64_t>::max(),
                                       "sampling_params.max_new_tokens")
                              .value_or(kDefaultMaxNewTokens);
  if (read_integer(p, "n", 1, 1, "sampling_params.n").value_or(1) != 1) {
    invalid_param("sampling_params.n", "n > 1 is not supported on /generate");
  }
  if (read_integer(p, "min_new_tokens", 0, 0, "sampling_params.min_new_tokens").value_or(0) != 0) {
    invalid_param("sampling_params.min_new_tokens", "min_new_tokens is not supported");
  }
  return params;
}

NativeRequest parse_native_request(const json& body, ServerContext& context) {
  reject_unknown_fields(
      body, {"text", "input_ids", "sampling_params", "stream", "return_logprob", "top_logprobs_num",
             "logprob_start_len", "return_text_in_logprobs", "rid", "model"});
  NativeRequest native;
  const SamplingParams sampling = read_native_sampling(body, context);
  native.stream = read_bool(body, "stream").value_or(false);
  native.return_logprob = read_bool(body, "return_logprob").value_or(false);
  const int32_t top_logprobs =
      static_cast<int32_t>(read_integer(body, "top_logprobs_num", 0, 20).value_or(0));
  std::vector<std::vector<int32_t>> prompts;
  const json* text = field(body, "text");
  const json* ids = field(body, "input_ids");
  if ((text != nullptr) == (ids != nullptr)) {
    invalid_param("text", "exactly one of text and input_ids is required");
  }
  const auto encode = [&](const json& value, const std::string& param) {
    if (!value.is_string() || value.get<std::string>().empty()) {
      invalid_param(param, "{} must be a non-empty string", param);
    }
    return context.tokenizer().encode(value.get<std::string>(), /*add_special_tokens=*/true);
  };
  if (text) {
    if (text->is_array()) {
      native.batch = true;
      for (size_t i = 0; i < text->size(); ++i) {
        prompts.push_back(encode((*text)[i], fmt::format("text[{}]", i)));
      }
    } else {
      prompts.push_back(encode(*text, "text"));
    }
  } else if (ids->is_array() && !ids->empty() && (*ids)[0].is_array()) {
    native.batch = true;
    for (size_t i = 0; i < ids->size(); ++i) {
      prompts.push_back(
          read_token_ids((*ids)[i], context.vocab_size(), fmt::format("input_ids[{}]", i)));
    }
  } else {
    prompts.push_back(read_token_ids(*ids, context.vocab_size(), "input_ids"));
  }
  if (prompts.empty()) invalid_param(text ? "text" : "input_ids", "no prompt given");
  if (static_cast<int64_t>(prompts.size()) > context.config().max_choices) {
    invalid_param(text ? "text" : "input_ids", "at most {} prompts per request, got {}",
                  context.config().max_choices, prompts.size());
  }
  for (auto& prompt : prompts) {
    if (prompt.empty()) invalid_param(text ? "text" : "input_ids", "the prompt must not be empty");
    const int64_t need = static_cast<int64_t>(prompt.size()) + sampling.max_new_tokens;
    if (need > context.context_length()) {
      invalid_param("sampling_params.max_new_tokens",
                    "the prompt ({} tokens) plus max_new_tokens ({}) exceeds the context length {}",
                    prompt.size(), sampling.max_new_tokens, context.context_length());
    }
    GenerateRequest request;
    request.input_ids = std::move(prompt);
    request.sampling = sampling;
    request.return_logprob = native.return_logprob;
    request.top_logprobs_num = top_logprobs;
    native.requests.push_back(std::move(request));
  }
  return native;
}

json native_finish(const ChoiceState& choice) {
  if (choice.aborted) return {{"type", "abort"}};
  if (choice.finish && choice.finish->kind == FinishReason::Kind::kLength) {
    return {{"type", "length"}, {"length", choice.completion_tokens}};
  }
  if (choice.finish) return {{"type", "stop"}, {"matched", matched_stop_json(choice)}};
  return nullptr;
}

json native_result(const ServerContext& context, const GenerationJob& job, size_t index,
                   const ChoiceState& choice, bool with_logprobs, double e2e, bool finished) {
  const Tokenizer* tokenizer = context.engine().model().tokenizer.get();
  json meta = {{"id", fmt::format("{}-{}", job.id(), index)},
               {"finish_reason", finished ? native_finish(choice) : json(nullptr)},
               {"prompt_tokens", choice.prompt_tokens},
               {"completion_tokens", choice.completion_tokens},
               {"cached_tokens", choice.cached_tokens},
               {"e2e_latency", e2e}};
  if (with_logprobs) {
    json output = json::array(), top = json::array();
    for (const auto& entry : choice.logprobs) {
      output.push_back({entry.logprob, entry.token, token_text(tokenizer, entry.token)});
      json alternatives = json::array();
      for (const auto& [id, logprob] : entry.top) {
        alternatives.push_back({logprob, id, token_text(tokenizer, id)});
      }
      top.push_back(std::move(alternatives));
    }
    meta["output_token_logprobs"] = std::move(output);
    meta["output_top_logprobs"] = std::move(top);
  }
  json result = {
      {"text", choice.text}, {"output_ids", choice.output_ids}, {"meta_info", std::move(meta)}};
  if (job.choices().size() > 1) result["index"] = index;
  return result;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void handle_generate(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  const json body = parse_json_object(exchange->request().body());
  check_model_name(body, context);
  NativeRequest native = parse_native_request(body, context);
  const bool stream = native.stream, batch = native.batch, logprobs = native.return_logprob;
  auto job_slot = std::make_shared<std::weak_ptr<GenerationJob>>();
  ServerContext* ctx = &context;
  GenerationJob::ChunkFn on_chunk;
  GenerationJob::DoneFn on_done;
  if (stream) {
    // SGLang streams the whole text so far in every event, not a delta.
    on_chunk = [ctx, exchange, job_slot, logprobs](size_t index, const StreamChunk& chunk) {
      const auto job = job_slot->lock();
      if (!job || chunk.error) return;
      const json result = native_result(*ctx, *job, index, job->choices()[index], logprobs,
                                        seconds_since(exchange->arrival()), chunk.finished);
      exchange->send_event(dump_json(result));
    };
    on_done = [exchange, job_slot] {
      if (const auto job = job_slot->lock(); job && job->first_error()) {
        exchange->send_event(dump_json(error_json(500, "internal_error", *job->first_error())));
      }
      exchange->send_event("[DONE]");
      exchange->end_events();
    };
  } else {
    on_done = [ctx, exchange, job_slot, batch, logprobs] {
      const auto job = job_slot->lock();
      if (!job) return;
      if (const auto error = job->first_error()) {
        ctx->metrics().count_http_error();
        exchange->respond_json(500, error_json(500, "internal_error", *error));
        return;
      }
      const double e2e = seconds_since(exchange->arrival());
      json results = json::array();
      for (size_t i = 0; i < job->choices().size(); ++i) {
        results.push_back(native_result(*ctx, *job, i, job->choices()[i], logprobs, e2e, true));
      }
      exchange->respond_json(200, batch ? results : results[0]);
    };
  }
  auto job = GenerationJob::start(context, exchange, std::move(native.requests),
                                  std::move(on_chunk), std::move(on_done));
  *job_slot = job;
  if (stream) exchange->start_events();
}

void handle_health(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  if (context.draining()) {
    exchange->respond_json(503, error_json(503, "service_unavailable_error", "shutting down"),
                           {{"Retry-After", "5"}});
    return;
  }
  exchange->respond_json(200, {{"status", "ok"}});
}

// Proves the engine still generates: one greedy token from a one-token prompt.
void handle_health_generate(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  GenerateRequest request;
  const auto& model = context.engine().model();
  const auto bos = model.tokenizer ? model.tokenizer->bos_id() : std::nullopt;
  request.input_ids = {bos.value_or(0)};
  request.sampling.temperature = 0.0f;
  request.sampling.max_new_tokens = 1;
  request.sampling.ignore_eos = true;
  std::vector<GenerateRequest> requests;
  requests.push_back(std::move(request));
  auto job_slot = std::make_shared<std::weak_ptr<GenerationJob>>();
  auto job = GenerationJob::start(context, exchange, std::move(requests), {}, [exchange, job_slot] {
    const auto job_ptr = job_slot->lock();
    if (job_ptr && !job_ptr->first_error() && !job_ptr->choices()[0].output_ids.empty()) {
      exchange->respond_json(200, {{"status", "ok"}});
    } else {
      exchange->respond_json(503, error_json(503, "service_unavailable_error",
                                             "the engine failed a one-token generation"));
    }
  });
  *job_slot = job;
}

void handle_model_info(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  const auto& model = context.engine().model();
  exchange->respond_json(200, {{"model_path", model.path.string()},
                               {"tokenizer_path", model.path.string()},
                               {"served_model_name", context.model_name()},
                               {"is_generation", true},
                               {"model_type", model.config.model_type},
                               {"format", model.format},
                               {"context_length", context.context_length()},
                               {"vocab_size", context.vocab_size()}});
}

void handle_server_info(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  const EngineArgs& args = context.engine().args();
  const EngineStats stats = context.engine().stats();
  json info = {{"model_path", args.model_path},
               {"served_model_name", context.model_name()},
               {"dtype", args.dtype},
               {"quantization", args.quantization},
               {"kv_cache_dtype", args.kv_cache_dtype},
               {"context_length", context.context_length()},
               {"max_running_requests", args.max_running_requests},
               {"max_total_tokens", args.max_total_tokens},
               {"chunked_prefill_size", args.chunked_prefill_size},
               {"disable_radix_cache", args.disable_radix_cache},
               {"threads", args.threads},
               {"host", context.config().host},
               {"port", context.config().port},
               {"max_queued_requests", context.config().max_queued_requests},
               {"version", "nibble"}};
  info["internal_states"] =
      json::array({{{"num_running_reqs", stats.running_requests},
                    {"num_queue_reqs", stats.waiting_requests},
                    {"kv_tokens_used", stats.kv_tokens_used},
                    {"kv_tokens_total", stats.kv_tokens_total},
                    {"kv_tokens_cached", stats.kv_tokens_cached},
                    {"kv_tokens_in_requests", stats.kv_tokens_used - stats.kv_tokens_cached},
                    {"prompt_tokens_total", stats.prompt_tokens_total},
                    {"generation_tokens_total", stats.generation_tokens_total},
                    {"cached_prompt_tokens_total", stats.cached_prompt_tokens_total},
                    {"requests_finished_total", stats.requests_finished_total},
                    {"active_http_jobs", context.active_jobs().load()}}});
  exchange->respond_json(200, info);
}

void handle_flush_cache(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  context.engine().flush_cache();
  exchange->respond(200, "Cache flushed.\n", "text/plain; charset=utf-8");
}

void handle_metrics(ServerContext& context, const std::shared_ptr<Exchange>& exchange) {
  exchange->respond(200, context.metrics().render(context.engine().stats(), context.model_name()),
                    "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace nibble::server
