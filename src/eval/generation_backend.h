#pragma once
// Where the generation-based measures (GSM8K, LAMBADA by generation) get their greedy
// continuations: the in-process engine, or any OpenAI-compatible server's /v1/completions
// (SGLang, vLLM, llama.cpp, nibble serve), so that all of them are scored by one harness.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/kv_scales.h"

namespace nibble {
class Model;
class Tokenizer;
}  // namespace nibble

namespace nibble::eval {

struct GenerationRequest {
  std::string prompt;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;  // the output is cut before the first match
};

class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;
  // The greedy (temperature 0) continuation of the prompt, without the stop string.
  virtual std::string generate(const GenerationRequest& request) = 0;
  // What produced the outputs, for reports: the model path or the server's URL and model.
  virtual std::string describe() const = 0;
};

// The prompt is tokenized without special tokens, as lm-evaluation-harness does for these
// tasks; EOS ids end generation.
std::unique_ptr<GenerationBackend> make_engine_backend(Model& model, const Tokenizer& tokenizer,
                                                       std::vector<int32_t> eos_ids, KvCacheSpec kv,
                                                       std::string description);

struct ServerBackendOptions {
  std::string base_url;  // "http://host:port" (the routes are under /v1)
  std::string model;     // "" asks the server's /v1/models for its first model
  std::string api_key;
  int64_t timeout_s = 600;
};

// /v1/completions with temperature 0; errors name the URL and carry the server's message.
std::unique_ptr<GenerationBackend> make_server_backend(const ServerBackendOptions& options);

}  // namespace nibble::eval
