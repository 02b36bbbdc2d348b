#include "eval/generation_backend.h"

#include <fmt/format.h>

#include <chrono>

#include "core/error.h"
#include "net/http_client.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"

namespace nibble::eval {
namespace {

GeneratorOptions options_with(KvCacheSpec kv) {
  GeneratorOptions options;
  options.kv = std::move(kv);
  return options;
}

class EngineBackend final : public GenerationBackend {
 public:
  EngineBackend(Model& model, const Tokenizer& tokenizer, std::vector<int32_t> eos_ids,
                KvCacheSpec kv, std::string description)
      : tokenizer_(tokenizer),
        generator_(model, &tokenizer, std::move(eos_ids), options_with(std::move(kv))),
        description_(std::move(description)) {}

  std::string generate(const GenerationRequest& request) override {
    SamplingParams params;
    params.temperature = 0.0f;
    params.max_new_tokens = request.max_tokens;
    params.stop = request.stop;
    return generator_.generate(tokenizer_.encode(request.prompt, false), params).text;
  }

  std::string describe() const override { return description_; }

 private:
  const Tokenizer& tokenizer_;
  Generator generator_;
  std::string description_;
};

// The server's own error message when it sent an OpenAI-style error object.
std::string server_message(const net::HttpResponse& response) {
  try {
    const auto j = nlohmann::json::parse(response.body);
    if (j.contains("error") && j["error"].is_object() && j["error"].contains("message")) {
      return j["error"]["message"].dump();
    }
    if (j.contains("message")) return j["message"].dump();
  } catch (const nlohmann::json::exception&) {
  }
  return response.body.substr(0, 300);
}

class ServerBackend final : public GenerationBackend {
 public:
  explicit ServerBackend(const ServerBackendOptions& o)
      : client_(o.base_url, {.api_key = o.api_key,
                             .connect_timeout = std::chrono::seconds(10),
                             .read_timeout = std::chrono::seconds(o.timeout_s)}),
        model_(o.model) {
    if (model_.empty()) model_ = first_model();
  }

  std::string generate(const GenerationRequest& request) override {
    nlohmann::json body = {{"model", model_},
                           {"prompt", request.prompt},
                           {"max_tokens", request.max_tokens},
                           {"temperature", 0.0},
                           {"stream", false}};
    if (!request.stop.empty()) body["stop"] = request.stop;
    const net::HttpResponse r = client_.post_json("/v1/completions", body);
    const std::string url = client_.url().full("/v1/completions");
    NIBBLE_CHECK(r.ok(), "{}: HTTP {}: {}", url, r.status, server_message(r));
    const nlohmann::json j = r.json();
    NIBBLE_CHECK(j.contains("choices") && j["choices"].is_array() && !j["choices"].empty() &&
                     j["choices"][0].contains("text") && j["choices"][0]["text"].is_string(),
                 "{}: the response has no choices[0].text: {}", url, r.body.substr(0, 300));
    return j["choices"][0]["text"].get<std::string>();
  }

  std::string describe() const override {
    return fmt::format("{} ({})", client_.url().origin() + client_.url().base_path, model_);
  }

 private:
  std::string first_model() {
    const net::HttpResponse r = client_.get("/v1/models");
    const std::string url = client_.url().full("/v1/models");
    NIBBLE_CHECK(r.ok(), "{}: HTTP {}: {} (give --model to skip this query)", url, r.status,
                 server_message(r));
    const nlohmann::json j = r.json();
    NIBBLE_CHECK(j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
                     j["data"][0].contains("id") && j["data"][0]["id"].is_string(),
                 "{}: no model listed (give --model)", url);
    return j["data"][0]["id"].get<std::string>();
  }

  net::HttpClient client_;
  std::string model_;
};

}  // namespace

std::unique_ptr<GenerationBackend> make_engine_backend(Model& model, const Tokenizer& tokenizer,
                                                       std::vector<int32_t> eos_ids, KvCacheSpec kv,
                                                       std::string description) {
  return std::make_unique<EngineBackend>(model, tokenizer, std::move(eos_ids), std::move(kv),
                                         std::move(description));
}

std::unique_ptr<GenerationBackend> make_server_backend(const ServerBackendOptions& options) {
  return std::make_unique<ServerBackend>(options);
}

}  // namespace nibble::eval
