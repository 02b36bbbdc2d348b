#pragma once
// The engine: owns a model, its paged KV cache (with radix prefix reuse) and a scheduler
// thread that runs continuous batching with chunked prefill over the flat token batch.
// Thread-safe: any thread may submit, cancel or read stats.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/sampling_params.h"
#include "runtime/stop_checker.h"

namespace nibble {

struct ModelSource;

// The arguments of `nibble serve`, spelled as sglang.launch_server spells them.
struct EngineArgs {
  std::string model_path;               // HF directory or GGUF file; empty: the default model
  std::string dtype = "auto";           // auto, float32, bfloat16
  std::string quantization;             // --quantization: the checkpoint's method or an online one
  std::string torchao_config;           // --torchao-config: torchao-style online quantization
  std::string kv_cache_dtype = "auto";  // auto (float32), bf16, fp8_e4m3, fp8_e5m2
  std::string quantization_param_path;  // fp8 KV-cache scales JSON
  int64_t context_length = 0;           // 0: the model's max_position_embeddings
  int64_t max_running_requests = 64;    // sequences decoded together
  int64_t max_total_tokens = 0;         // KV-cache capacity in tokens; 0: derived from memory
  int64_t chunked_prefill_size = 512;   // prompt tokens per engine step
  bool disable_radix_cache = false;
  int threads = 0;                // CPU threads; 0: all cores
  std::string chat_template;      // a file overriding the model's template
  std::string served_model_name;  // default: the model path's last component
  std::optional<uint64_t> random_seed;
  // With quantization modelopt_fp8 / modelopt_fp4 on an unquantized checkpoint (ModelOpt
  // quantize-and-serve): also export the ModelOpt checkpoint; save / restore the calibration.
  std::string modelopt_export_path;
  std::string modelopt_checkpoint_save_path;
  std::string modelopt_checkpoint_restore_path;
};

// Seeds: a request's sampling.seed fixes its samples for a given batch composition; without
// one, EngineArgs::random_seed (if set) derives a per-request seed from the arrival order.
struct GenerateRequest {
  std::vector<int32_t> input_ids;  // either ids ...
  std::string text;                // ... or text, tokenized with special tokens
  SamplingParams sampling;
  bool return_logprob = false;
  int32_t top_logprobs_num = 0;
};

// Log-probabilities are the log-softmax of the model's raw logits, before temperature,
// penalties and top-k/top-p/min-p.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs_num best, best first
};

// Delivered to a request's callback each step it produced something, and once at the end.
struct StreamChunk {
  std::string text;                // new, final text (never a broken UTF-8 sequence)
  std::vector<int32_t> token_ids;  // new output tokens
  std::vector<TokenLogprob> logprobs;
  bool finished = false;
  std::optional<FinishReason> finish;
  std::optional<std::string> error;  // set (with finished) when the request failed
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

struct GenerateOutput {
  std::string text;
  std::vector<int32_t> output_ids;
  std::vector<TokenLogprob> logprobs;
  FinishReason finish;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};

struct EngineStats {
  int64_t running_requests = 0;
  int64_t waiting_requests = 0;
  int64_t kv_tokens_used = 0;  // KV slots held: by requests and by the prefix cache
  int64_t kv_tokens_total = 0;
  int64_t kv_tokens_cached = 0;     // of kv_tokens_used: prefix-cache blocks no request uses
                                    // (evicted on demand; flush_cache() drops them)
  int64_t prompt_tokens_total = 0;  // counters since start
  int64_t generation_tokens_total = 0;
  int64_t cached_prompt_tokens_total = 0;  // prefix-cache hits, in tokens
  int64_t requests_finished_total = 0;
  int64_t preemptions_total = 0;  // requests paused for lack of KV space (recomputed later)
};

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Stops the request within one engine step and frees its KV blocks; the callback then
  // receives a final chunk with finish "abort".
  virtual void cancel() = 0;
};

class Engine {
 public:
  explicit Engine(const EngineArgs& args);
  // From an already opened model (tests, embedders); args.model_path is then ignored.
  Engine(const EngineArgs& args, ModelSource&& source);
  ~Engine();  // stops the scheduler; unfinished requests end with an error chunk
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Blocking, batched: all prompts run together through continuous batching.
  std::vector<GenerateOutput> generate(const std::vector<std::string>& prompts,
                                       const SamplingParams& params);
  std::vector<GenerateOutput> generate(const std::vector<GenerateRequest>& requests);

  // Streaming: `on_chunk` is called from the engine thread; it must not block. It gets a chunk
  // for every step that produced tokens or text, and exactly one chunk with finished set (by
  // then the request's KV blocks are free and stats() counts it). A stop token ends the
  // request without appearing in token_ids/text/logprobs, but completion_tokens counts it.
  // Should on_chunk throw, the request is cancelled. A request with max_new_tokens 0 ends at
  // once with finish "length".
  // Throws nibble::Error for an invalid request (bad parameters, out-of-vocabulary ids, prompt
  // + max_new_tokens over the context length, a prompt larger than the whole KV cache,
  // top_logprobs_num outside [0, 20] or without return_logprob).
  std::shared_ptr<RequestHandle> submit(GenerateRequest request,
                                        std::function<void(const StreamChunk&)> on_chunk);

  const ModelSource& model() const;  // config, tokenizer, chat template, stop ids
  // The arguments with defaults resolved: context_length, max_total_tokens (rounded to whole
  // KV blocks), served_model_name and model_path are filled in.
  const EngineArgs& args() const;
  EngineStats stats() const;
  // Drops the prefix cache (blocks in use stay); returns once done, except when called from
  // a callback, where it only asks for it (done before the next step).
  void flush_cache();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble
