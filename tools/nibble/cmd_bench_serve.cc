// `nibble bench serve`: throughput and latency of an OpenAI-compatible server under load, in
// the manner of SGLang's bench_serving (same flags, same metric definitions; see
// src/net/serving_metrics.h): random prompts of given token lengths, sent at Poisson arrival
// times or all at once, optionally capped at a number of requests in flight.
#include "cmd_bench_serve.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.h"
#include "model/loader.h"
#include "net/http_client.h"
#include "net/serving_metrics.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_text.h"

namespace nibble::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchServeOptions {
  std::string base_url = "http://127.0.0.1:30000";
  std::string backend = "openai";
  std::string model;      // the name sent in requests; "" asks /v1/models
  std::string tokenizer;  // HF directory or GGUF; "" is the default model
  std::string dataset_name = "random";
  std::string dataset_path;  // text whose tokens the prompts are cut from
  int64_t num_prompts = 1000;
  int64_t random_input_len = 1024;
  int64_t random_output_len = 1024;
  double random_range_ratio = 0.0;
  std::string request_rate = "inf";
  int64_t max_concurrency = 0;  // 0: no cap
  uint64_t seed = 1;
  std::string api_key;
  std::string output_file;
  bool disable_stream = false;
  bool disable_ignore_eos = false;
  bool flush_cache = false;
  int64_t warmup_requests = 1;
  std::string extra_request_body;
  double request_timeout_s = 600.0;
};

enum class Api { kCompletions, kChat };

Api api_of(const std::string& backend) {
  for (const char* name : {"openai", "sglang-oai", "vllm", "lmdeploy"}) {
    if (backend == name) return Api::kCompletions;
  }
  for (const char* name : {"openai-chat", "sglang-oai-chat", "vllm-chat", "lmdeploy-chat"}) {
    if (backend == name) return Api::kChat;
  }
  fail(
      "--backend {}: not supported; use openai, sglang-oai, vllm or lmdeploy (/v1/completions) "
      "or openai-chat, sglang-oai-chat, vllm-chat or lmdeploy-chat (/v1/chat/completions)",
      backend);
}

double parse_rate(const std::string& text) {
  if (text == "inf") return std::numeric_limits<double>::infinity();
  double rate = 0.0;
  try {
    size_t used = 0;
    rate = std::stod(text, &used);
    NIBBLE_CHECK(used == text.size(), "--request-rate {}: expected a number or inf", text);
  } catch (const std::logic_error&) {
    fail("--request-rate {}: expected a number or inf", text);
  }
  NIBBLE_CHECK(rate > 0, "--request-rate {}: must be > 0 (or inf)", text);
  return rate;
}

struct Prompt {
  std::string text;
  int64_t input_len = 0;  // tokens of `text` by the tokenizer
  int64_t output_len = 0;
};

// Where prompt tokens come from: random vocabulary entries, or windows of a text.
class TokenSource {
 public:
  TokenSource(const Tokenizer& tokenizer, const std::string& text_path, std::mt19937_64& rng)
      : rng_(rng) {
    if (!text_path.empty()) {
      std::ifstream in(text_path, std::ios::binary);
      NIBBLE_CHECK(in, "--dataset-path {}: cannot open", text_path);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      text_ = tokenizer.encode(text, false);
      NIBBLE_CHECK(text_.size() >= 16, "--dataset-path {}: too little text ({} tokens)", text_path,
                   text_.size());
      return;
    }
    // Only tokens that are whole UTF-8 on their own, so that any sequence of them is valid
    // text the server will accept and tokenize back.
    for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
      const auto token = static_cast<int32_t>(id);
      if (tokenizer.is_special(token)) continue;
      const std::string piece = tokenizer.decode(std::span(&token, 1), true);
      if (!piece.empty() && text::is_valid_utf8(piece)) vocabulary_.push_back(token);
    }
    NIBBLE_CHECK(!vocabulary_.empty(), "the tokenizer has no usable tokens for random prompts");
  }

  void start_prompt() {
    if (!text_.empty()) {
      position_ = std::uniform_int_distribution<size_t>(0, text_.size() - 1)(rng_);
    }
  }

  void append(std::vector<int32_t>& ids, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      if (text_.empty()) {
        ids.push_back(
            vocabulary_[std::uniform_int_distribution<size_t>(0, vocabulary_.size() - 1)(rng_)]);
      } else {
        ids.push_back(text_[position_]);
        position_ = (position_ + 1) % text_.size();
      }
    }
  }

 private:
  std::mt19937_64& rng_;
  std::vector<int32_t> vocabulary_;
  std::vector<int32_t> text_;
  size_t position_ = 0;
};

// Text that tokenizes to `length` tokens: decoding tokens and encoding the text again merges
// some of them, so the ids are topped up or cut until the round trip is exact (it almost
// always is within a few rounds; the prompt keeps its measured length otherwise).
Prompt make_prompt(const Tokenizer& tokenizer, TokenSource& source, int64_t length,
                   int64_t output_len) {
  source.start_prompt();
  std::vector<int32_t> ids;
  source.append(ids, length);
  std::string text;
  std::vector<int32_t> encoded;
  for (int round = 0; round < 16; ++round) {
    text = tokenizer.decode(ids, true);
    if (!text::is_valid_utf8(text)) {  // a cut inside a character: drop the partial token
      ids.pop_back();
      source.append(ids, 1);
      continue;
    }
    encoded = tokenizer.encode(text, false);
    const auto n = int64_t(encoded.size());
    if (n == length) break;
    ids = encoded;
    if (n > length) ids.resize(size_t(length));
    if (n < length) source.append(ids, length - n);
  }
  encoded = tokenizer.encode(text, false);
  return {.text = std::move(text), .input_len = int64_t(encoded.size()), .output_len = output_len};
}

std::vector<Prompt> make_prompts(const BenchServeOptions& o, const Tokenizer& tokenizer,
                                 std::mt19937_64& rng) {
  NIBBLE_CHECK(o.dataset_name == "random",
               "--dataset-name {}: only 'random' is supported (with --dataset-path for text)",
               o.dataset_name);
  NIBBLE_CHECK(o.num_prompts >= 1, "--num-prompts must be >= 1, got {}", o.num_prompts);
  NIBBLE_CHECK(o.random_input_len >= 1, "--random-input-len must be >= 1");
  NIBBLE_CHECK(o.random_output_len >= 1, "--random-output-len must be >= 1");
  NIBBLE_CHECK(o.random_range_ratio >= 0 && o.random_range_ratio <= 1,
               "--random-range-ratio must be in [0, 1], got {}", o.random_range_ratio);
  TokenSource source(tokenizer, o.dataset_path, rng);
  // As bench_serving: each length is uniform in [max(len * ratio, 1), len].
  const auto length_in = [&](int64_t len) {
    const int64_t lo = std::max<int64_t>(int64_t(double(len) * o.random_range_ratio), 1);
    return std::uniform_int_distribution<int64_t>(lo, len)(rng);
  };
  std::vector<Prompt> prompts;
  for (int64_t i = 0; i < o.num_prompts; ++i) {
    const int64_t input_len = length_in(o.random_input_len);
    const int64_t output_len = length_in(o.random_output_len);
    prompts.push_back(make_prompt(tokenizer, source, input_len, output_len));
  }
  return prompts;
}

// Seconds from the start at which each request is issued: exponential gaps for a Poisson
// process of the given rate, or all at 0.
std::vector<double> arrival_times(int64_t n, double rate, std::mt19937_64& rng) {
  std::vector<double> times(size_t(n), 0.0);
  if (std::isinf(rate)) return times;
  std::exponential_distribution<double> gap(rate);
  double t = 0.0;
  for (auto& time : times) {
    time = t;
    t += gap(rng);
  }
  return times;
}

struct RequestContext {
  const BenchServeOptions& options;
  Api api;
  std::string model;
  nlohmann::json extra;
};

nlohmann::json request_body(const RequestContext& c, const Prompt& p, int64_t output_len) {
  const bool stream = !c.options.disable_stream;
  nlohmann::json body = {
      {"model", c.model}, {"max_tokens", output_len}, {"temperature", 0.0}, {"stream", stream}};
  if (c.api == Api::kCompletions) {
    body["prompt"] = p.text;
  } else {
    body["messages"] = {{{"role", "user"}, {"content", p.text}}};
  }
  if (!c.options.disable_ignore_eos) body["ignore_eos"] = true;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  body.update(c.extra);
  return body;
}

// The text a response chunk (or a whole response) carries, "" for role or usage chunks.
std::string chunk_text(const nlohmann::json& j, Api api, bool stream) {
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return {};
  const nlohmann::json& choice = j["choices"][0];
  const nlohmann::json* text = nullptr;
  if (api == Api::kCompletions) {
    if (choice.contains("text")) text = &choice["text"];
  } else {
    const char* key = stream ? "delta" : "message";
    if (choice.contains(key) && choice[key].is_object() && choice[key].contains("content")) {
      text = &choice[key]["content"];
    }
  }
  return text && text->is_string() ? text->get<std::string>() : std::string();
}

std::string error_message(const nlohmann::json& j) {
  if (!j.contains("error")) return {};
  const auto& e = j["error"];
  return e.is_object() && e.contains("message") ? e["message"].dump() : e.dump();
}

net::RequestOutcome send_request(net::HttpClient& client, const RequestContext& c, const Prompt& p,
                                 int64_t output_len) {
  const bool stream = !c.options.disable_stream;
  const char* path = c.api == Api::kCompletions ? "/v1/completions" : "/v1/chat/completions";
  const nlohmann::json body = request_body(c, p, output_len);
  net::RequestOutcome r;
  r.prompt_tokens = p.input_len;
  int64_t chunks = 0;
  bool usage_seen = false;
  const auto read_usage = [&](const nlohmann::json& j) {
    if (!j.contains("usage") || !j["usage"].is_object()) return;
    const auto& u = j["usage"];
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
      r.prompt_tokens = u["prompt_tokens"].get<int64_t>();
    }
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
      r.output_tokens = u["completion_tokens"].get<int64_t>();
      usage_seen = true;
    }
  };
  const auto start = Clock::now();
  try {
    if (!stream) {
      const net::HttpResponse response = client.post_json(path, body);
      r.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
      r.ttft_s = r.latency_s;
      const nlohmann::json j = response.json();
      if (!response.ok()) {
        r.error = fmt::format("HTTP {}: {}", response.status, error_message(j));
        return r;
      }
      r.generated_text = chunk_text(j, c.api, false);
      read_usage(j);
      r.success = true;
      return r;
    }
    Clock::time_point last;
    const net::SseResult result = client.post_json_stream(path, body, [&](const net::SseEvent& e) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(e.data);
      } catch (const nlohmann::json::exception&) {
        r.error = "an event is not JSON: " + e.data.substr(0, 200);
        return false;
      }
      if (const std::string message = error_message(j); !message.empty()) {
        r.error = "error event: " + message;
        return false;
      }
      read_usage(j);
      const std::string text = chunk_text(j, c.api, true);
      if (text.empty()) return true;
      if (chunks == 0) {
        r.ttft_s = std::chrono::duration<double>(e.arrival - start).count();
      } else {
        r.itl_s.push_back(std::chrono::duration<double>(e.arrival - last).count());
      }
      last = e.arrival;
      ++chunks;
      r.generated_text += text;
      return true;
    });
    r.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (!result.response.ok()) {
      std::string message = result.response.body.substr(0, 300);
      try {
        message = error_message(nlohmann::json::parse(result.response.body));
      } catch (const nlohmann::json::exception&) {
      }
      r.error = fmt::format("HTTP {}: {}", result.response.status, message);
      return r;
    }
    if (!r.error.empty()) return r;
    if (!result.saw_done) {
      r.error = "the stream ended without [DONE]";
      return r;
    }
    if (!usage_seen) r.output_tokens = chunks;  // no usage: one token per chunk, as sent
    r.success = chunks > 0;
    if (!r.success) r.error = "no output text";
  } catch (const Error& e) {
    r.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
    r.error = e.what();
  }
  return r;
}

net::HttpClientOptions client_options(const BenchServeOptions& o) {
  return {.api_key = o.api_key,
          .connect_timeout = std::chrono::milliseconds(10'000),
          .read_timeout = std::chrono::milliseconds(int64_t(o.request_timeout_s * 1000))};
}

std::string first_model(const BenchServeOptions& o) {
  net::HttpClient client(o.base_url, client_options(o));
  const net::HttpResponse r = client.get("/v1/models");
  NIBBLE_CHECK(r.ok(), "GET {}: HTTP {} (give --model to skip this query): {}",
               client.url().full("/v1/models"), r.status, r.body.substr(0, 300));
  const nlohmann::json j = r.json();
  NIBBLE_CHECK(j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
                   j["data"][0].contains("id") && j["data"][0]["id"].is_string(),
               "GET {}: no model listed (give --model)", client.url().full("/v1/models"));
  return j["data"][0]["id"].get<std::string>();
}

// Issues request i at start + arrival[i] to whichever worker is free; with --max-concurrency
// the worker count is the cap, so a request that arrives while all are busy waits (and its
// latency starts when it is sent, as in bench_serving).
std::vector<net::RequestOutcome> run_load(const RequestContext& c,
                                          const std::vector<Prompt>& prompts,
                                          const std::vector<double>& arrival, double* duration_s) {
  const size_t n = prompts.size();
  const size_t workers =
      c.options.max_concurrency > 0 ? std::min(n, size_t(c.options.max_concurrency)) : n;
  std::vector<net::RequestOutcome> outcomes(n);
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<size_t> queue;
  bool closed = false;
  size_t done = 0;
  std::vector<std::thread> threads;
  threads.reserve(workers);
  const auto start = Clock::now();
  for (size_t w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      net::HttpClient client(c.options.base_url, client_options(c.options));
      for (;;) {
        size_t i = 0;
        {
          std::unique_lock lock(mutex);
          ready.wait(lock, [&] { return closed || !queue.empty(); });
          if (queue.empty()) return;
          i = queue.front();
          queue.pop_front();
        }
        outcomes[i] = send_request(client, c, prompts[i], prompts[i].output_len);
        std::lock_guard lock(mutex);
        ++done;
        if (done * 10 / n != (done - 1) * 10 / n) {
          std::fprintf(stderr, "%zu/%zu requests done\n", done, n);
        }
      }
    });
  }
  for (size_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(arrival[i])));
    std::lock_guard lock(mutex);
    queue.push_back(i);
    ready.notify_one();
  }
  {
    std::lock_guard lock(mutex);
    closed = true;
  }
  ready.notify_all();
  for (auto& t : threads) t.join();
  *duration_s = std::chrono::duration<double>(Clock::now() - start).count();
  return outcomes;
}

int run_bench_serve(const BenchServeOptions& o) {
  const Api api = api_of(o.backend);
  const double rate = parse_rate(o.request_rate);
  NIBBLE_CHECK(o.max_concurrency >= 0, "--max-concurrency must be >= 0 (0: no cap)");
  NIBBLE_CHECK(o.request_timeout_s > 0, "--request-timeout must be > 0");
  nlohmann::json extra = nlohmann::json::object();
  if (!o.extra_request_body.empty()) {
    try {
      extra = nlohmann::json::parse(o.extra_request_body);
    } catch (const nlohmann::json::exception& e) {
      fail("--extra-request-body: not JSON: {}", e.what());
    }
    NIBBLE_CHECK(extra.is_object(), "--extra-request-body: expected a JSON object");
  }
  const std::filesystem::path tokenizer_path =
      o.tokenizer.empty() ? default_model_path() : std::filesystem::path(o.tokenizer);
  const auto tokenizer = Tokenizer::from_path(tokenizer_path);
  std::mt19937_64 rng(o.seed);
  const std::vector<Prompt> prompts = make_prompts(o, *tokenizer, rng);
  const std::vector<double> arrival = arrival_times(o.num_prompts, rate, rng);
  const RequestContext context{.options = o,
                               .api = api,
                               .model = o.model.empty() ? first_model(o) : o.model,
                               .extra = std::move(extra)};

  for (int64_t w = 0; w < o.warmup_requests; ++w) {
    net::HttpClient client(o.base_url, client_options(o));
    const auto r =
        send_request(client, context, prompts[0], std::min<int64_t>(prompts[0].output_len, 16));
    NIBBLE_CHECK(r.success, "warm-up request to {} failed: {}", o.base_url, r.error);
  }
  if (o.flush_cache) {
    // Prompts repeat across runs with the same seed (and the warm-up reuses the first one):
    // without a flush, a server with prefix caching would skip their prefill.
    net::HttpClient client(o.base_url, client_options(o));
    const net::HttpResponse r = client.post_json("/flush_cache", nlohmann::json::object());
    NIBBLE_CHECK(r.ok(), "POST {}: HTTP {}: {}", client.url().full("/flush_cache"), r.status,
                 r.body.substr(0, 300));
  }
  std::fprintf(stderr, "%lld requests to %s (%s), rate %s, max concurrency %s\n",
               (long long)o.num_prompts, o.base_url.c_str(), context.model.c_str(),
               o.request_rate.c_str(),
               o.max_concurrency > 0 ? std::to_string(o.max_concurrency).c_str() : "none");
  double duration_s = 0.0;
  const auto outcomes = run_load(context, prompts, arrival, &duration_s);
  const net::ServingSummary summary = net::summarize(outcomes, duration_s);

  int64_t shown = 0;
  for (const auto& r : outcomes) {
    if (!r.success && shown++ < 5) std::fprintf(stderr, "request failed: %s\n", r.error.c_str());
  }
  const std::string concurrency =
      o.max_concurrency > 0 ? std::to_string(o.max_concurrency) : "not set";
  std::printf("%s",
              net::format_table(
                  summary, {fmt::format("{:<40}{:>10}", "Backend:", o.backend),
                            fmt::format("{:<40}{:>10}", "Traffic request rate:", o.request_rate),
                            fmt::format("{:<40}{:>10}", "Max request concurrency:", concurrency)})
                  .c_str());
  if (!o.output_file.empty()) {
    nlohmann::json j = net::to_json(summary);
    j["backend"] = o.backend;
    j["base_url"] = o.base_url;
    j["model"] = context.model;
    j["tokenizer"] = tokenizer_path.string();
    j["dataset_name"] = o.dataset_name;
    j["dataset_path"] = o.dataset_path;
    j["num_prompts"] = o.num_prompts;
    j["random_input_len"] = o.random_input_len;
    j["random_output_len"] = o.random_output_len;
    j["random_range_ratio"] = o.random_range_ratio;
    j["request_rate"] = std::isinf(rate) ? nlohmann::json("inf") : nlohmann::json(rate);
    j["max_concurrency"] = o.max_concurrency > 0 ? nlohmann::json(o.max_concurrency) : nullptr;
    j["seed"] = o.seed;
    j["stream"] = !o.disable_stream;
    j["flush_cache"] = o.flush_cache;
    nlohmann::json input_lens, output_lens, ttfts, itls, errors;
    for (const auto& r : outcomes) {
      input_lens.push_back(r.prompt_tokens);
      output_lens.push_back(r.output_tokens);
      ttfts.push_back(r.ttft_s);
      itls.push_back(r.itl_s);
      errors.push_back(r.error);
    }
    j["input_lens"] = std::move(input_lens);
    j["output_lens"] = std::move(output_lens);
    j["ttfts"] = std::move(ttfts);
    j["itls"] = std::move(itls);
    j["errors"] = std::move(errors);
    // One JSON object per line, appended, as bench_serving does: runs accumulate in one file.
    std::ofstream out(o.output_file, std::ios::app);
    NIBBLE_CHECK(out, "--output-file {}: cannot open for writing", o.output_file);
    out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    NIBBLE_CHECK(out.good(), "--output-file {}: write failed", o.output_file);
  }
  return summary.completed > 0 ? 0 : 1;
}

}  // namespace

BenchServeCommand add_bench_serve(CLI::App& bench) {
  auto o = std::make_shared<BenchServeOptions>();
  CLI::App* app = bench.add_subcommand(
      "serve", "Load-test an OpenAI-compatible server (as SGLang's bench_serving)");
  app->add_option("--base-url", o->base_url, "the server")->capture_default_str();
  app->add_option("--backend", o->backend,
                  "openai (/v1/completions) or openai-chat (/v1/chat/completions); sglang-oai, "
                  "vllm, lmdeploy and their -chat forms are the same")
      ->capture_default_str();
  app->add_option("--model", o->model, "model name in the requests (default: the server's first)");
  app->add_option("--tokenizer,--model-path", o->tokenizer,
                  "tokenizer for the prompts: HF directory or GGUF (default: the default model)");
  app->add_option("--dataset-name", o->dataset_name, "random")->capture_default_str();
  app->add_option("--dataset-path", o->dataset_path,
                  "cut the prompts from this text file's tokens instead of random vocabulary");
  app->add_option("--num-prompts", o->num_prompts)->capture_default_str();
  app->add_option("--random-input-len", o->random_input_len, "prompt tokens")
      ->capture_default_str();
  app->add_option("--random-output-len", o->random_output_len, "output tokens (max_tokens)")
      ->capture_default_str();
  app->add_option("--random-range-ratio", o->random_range_ratio,
                  "lengths are uniform in [len * ratio, len]; 1 gives exact lengths")
      ->capture_default_str();
  app->add_option("--request-rate", o->request_rate,
                  "requests per second, Poisson arrivals; inf sends all at once")
      ->capture_default_str();
  app->add_option("--max-concurrency", o->max_concurrency, "most requests in flight (0: no cap)")
      ->capture_default_str();
  app->add_option("--seed", o->seed)->capture_default_str();
  app->add_option("--api-key", o->api_key, "sent as a Bearer token");
  app->add_option("--output-file", o->output_file, "append the results as one JSON line");
  app->add_flag("--disable-stream", o->disable_stream, "non-streaming requests (TTFT = E2E)");
  app->add_flag("--disable-ignore-eos", o->disable_ignore_eos,
                "do not send ignore_eos (outputs may then end early)");
  app->add_flag("--flush-cache", o->flush_cache,
                "POST /flush_cache after the warm-up (SGLang's route): no prefix-cache hits "
                "from earlier runs");
  app->add_option("--warmup-requests", o->warmup_requests, "sent one by one before the run")
      ->capture_default_str();
  app->add_option("--extra-request-body", o->extra_request_body,
                  "JSON object merged into every request body");
  app->add_option("--request-timeout", o->request_timeout_s,
                  "seconds a request may wait for any progress")
      ->capture_default_str();
  return {.app = app, .run = [o] { return run_bench_serve(*o); }};
}

}  // namespace nibble::cli
