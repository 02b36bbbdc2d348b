#include "nibble/engine.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/loader.h"
#include "quantize/quantize_and_serve.h"
#include "runtime/kv_scales.h"
#include "runtime/request.h"
#include "runtime/scheduler.h"

namespace nibble {
namespace {

constexpr int64_t kBlockSize = 16;
// OpenAI's cap; more would make every streamed token carry a large list.
constexpr int32_t kMaxTopLogprobs = 20;
// Share of physical memory the KV cache may take when --max-total-tokens is not given.
constexpr double kDefaultKvMemoryShare = 0.25;

class EngineRequestHandle : public RequestHandle {
 public:
  EngineRequestHandle(std::shared_ptr<RequestControl> control,
                      std::shared_ptr<SchedulerInbox> inbox)
      : control_(std::move(control)), inbox_(std::move(inbox)) {}
  void cancel() override {
    control_->cancelled.store(true);
    inbox_->notify_cancel();
  }

 private:
  std::shared_ptr<RequestControl> control_;
  std::shared_ptr<SchedulerInbox> inbox_;
};

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return uint64_t(8) << 30;  // unknown: assume 8 GiB
  return uint64_t(pages) * uint64_t(page_size);
}

// splitmix64: spreads --random-seed over requests so that each gets its own stream.
uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

ModelSource open_source(const EngineArgs& args) {
  return open_model_source(
      args.model_path.empty() ? default_model_path() : std::filesystem::path(args.model_path),
      args.quantization, args.torchao_config);
}

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in.good(), "{} {}: cannot open the file", what, path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

struct Engine::Impl {
  EngineArgs args;
  ModelSource source;
  std::unique_ptr<Model> model;
  std::atomic<uint64_t> next_id{0};
  std::unique_ptr<Scheduler> scheduler;  // last: stops before the model goes away

  Impl(const EngineArgs& given, ModelSource&& opened);
};

Engine::Impl::Impl(const EngineArgs& given, ModelSource&& opened)
    : args(given), source(std::move(opened)) {
  const ModelConfig& config = source.config;
  const KvCacheSpec kv = resolve_kv_cache(args.kv_cache_dtype, args.quantization_param_path,
                                          source.raw_checkpoint.get(), config.num_hidden_layers);
  const ComputeType compute =
      args.dtype == "auto" ? ComputeType::F32 : parse_compute_type(args.dtype);
  NIBBLE_CHECK(args.threads >= 0, "--threads must be >= 0, got {}", args.threads);
  if (args.threads > 0 && ThreadPool::global().size() != args.threads)
    ThreadPool::set_global_threads(args.threads);
  if (!args.chat_template.empty())
    source.chat_template = read_text_file(args.chat_template, "--chat-template");
  // Calibrates first when asked to (a no-op for a source that is already prepared).
  quantize::ModelOptServeOptions modelopt;
  modelopt.export_path = args.modelopt_export_path;
  modelopt.checkpoint_save_path = args.modelopt_checkpoint_save_path;
  modelopt.checkpoint_restore_path = args.modelopt_checkpoint_restore_path;
  quantize::prepare_quantize_and_serve(source, modelopt);

  NIBBLE_CHECK(args.context_length >= 0, "--context-length must be >= 0, got {}",
               args.context_length);
  if (args.context_length == 0) args.context_length = config.max_position_embeddings;
  NIBBLE_CHECK(args.max_running_requests >= 1, "--max-running-requests must be >= 1, got {}",
               args.max_running_requests);
  // SGLang spells "no chunking" as -1.
  if (args.chunked_prefill_size <= 0) args.chunked_prefill_size = args.context_length;

  const int64_t bytes_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads *
                                  config.head_dim * kv_dtype_bytes(kv.dtype);
  const uint64_t memory = physical_memory_bytes();
  NIBBLE_CHECK(args.max_total_tokens >= 0, "--max-total-tokens must be >= 0, got {}",
               args.max_total_tokens);
  if (args.max_total_tokens == 0) {
    const auto by_memory =
        int64_t(double(memory) * kDefaultKvMemoryShare / double(bytes_per_token));
    const int64_t by_use = args.context_length * args.max_running_requests;
    args.max_total_tokens = std::max(kBlockSize, std::min(by_memory, by_use));
  }
  const int64_t n_blocks = (args.max_total_tokens + kBlockSize - 1) / kBlockSize;
  args.max_total_tokens = n_blocks * kBlockSize;
  NIBBLE_CHECK(double(args.max_total_tokens) * double(bytes_per_token) <= double(memory),
               "--max-total-tokens {} needs {:.1f} GiB of KV cache, more than this machine's "
               "{:.1f} GiB of memory",
               args.max_total_tokens,
               double(args.max_total_tokens) * double(bytes_per_token) / double(1 << 30),
               double(memory) / double(1 << 30));

  if (args.served_model_name.empty()) {
    std::filesystem::path p = source.path;
    if (p.filename().empty()) p = p.parent_path();
    args.served_model_name = p.filename().empty() ? "default" : p.filename().string();
  }
  args.model_path = source.path.string();

  model = build_model(source, compute);
  SchedulerOptions options;
  options.max_running_requests = args.max_running_requests;
  options.chunked_prefill_size = args.chunked_prefill_size;
  options.block_size = kBlockSize;
  options.n_blocks = n_blocks;
  options.radix_cache = !args.disable_radix_cache;
  options.kv = kv;
  scheduler = std::make_unique<Scheduler>(*model, options);
}

Engine::Engine(const EngineArgs& args) : Engine(args, open_source(args)) {}

Engine::Engine(const EngineArgs& args, ModelSource&& source)
    : impl_(std::make_unique<Impl>(args, std::move(source))) {}

Engine::~Engine() = default;

const ModelSource& Engine::model() const { return impl_->source; }
const EngineArgs& Engine::args() const { return impl_->args; }
EngineStats Engine::stats() const { return impl_->scheduler->stats(); }
void Engine::flush_cache() { impl_->scheduler->flush_cache(); }

std::shared_ptr<RequestHandle> Engine::submit(GenerateRequest request,
                                              std::function<void(const StreamChunk&)> on_chunk) {
  const ModelSource& source = impl_->source;
  const int64_t vocab = source.config.vocab_size;
  NIBBLE_CHECK(request.input_ids.empty() || request.text.empty(),
               "give the prompt either as input_ids or as text, not both");
  std::vector<int32_t> prompt = std::move(request.input_ids);
  if (!request.text.empty()) {
    NIBBLE_CHECK(source.tokenizer != nullptr,
                 "the model {} has no tokenizer: give the prompt as input_ids",
                 impl_->args.served_model_name);
    prompt = source.tokenizer->encode(request.text, /*add_special_tokens=*/true);
  }
  NIBBLE_CHECK(!prompt.empty(), "the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i)
    NIBBLE_CHECK(prompt[i] >= 0 && prompt[i] < vocab,
                 "input_ids[{}] = {} is out of vocabulary (size {})", i, prompt[i], vocab);
  const SamplingParams& sampling = request.sampling;
  sampling.validate();
  for (int32_t id : sampling.stop_token_ids)
    NIBBLE_CHECK(id >= 0 && id < vocab, "stop_token_ids: {} is out of vocabulary (size {})", id,
                 vocab);
  NIBBLE_CHECK(request.top_logprobs_num >= 0 && request.top_logprobs_num <= kMaxTopLogprobs,
               "top_logprobs_num must be in [0, {}], got {}", kMaxTopLogprobs,
               request.top_logprobs_num);
  NIBBLE_CHECK(request.top_logprobs_num == 0 || request.return_logprob,
               "top_logprobs_num needs return_logprob");
  const auto prompt_len = int64_t(prompt.size());
  const int64_t context = impl_->args.context_length;
  NIBBLE_CHECK(prompt_len + sampling.max_new_tokens <= context,
               "this model's maximum context length is {} tokens, but the prompt ({} tokens) "
               "+ max_new_tokens ({}) asks for {}",
               context, prompt_len, sampling.max_new_tokens, prompt_len + sampling.max_new_tokens);
  const int64_t capacity = impl_->args.max_total_tokens;
  NIBBLE_CHECK(prompt_len <= capacity,
               "the prompt ({} tokens) can never fit in the KV cache ({} tokens): raise "
               "--max-total-tokens",
               prompt_len, capacity);

  const uint64_t id = impl_->next_id.fetch_add(1);
  if (!sampling.seed && impl_->args.random_seed)
    request.sampling.seed = mix_seed(*impl_->args.random_seed, id);
  auto owned = std::make_unique<Request>(id, std::move(prompt), request, std::move(on_chunk),
                                         source.tokenizer.get(), source.stop_ids);
  auto handle = std::make_shared<EngineRequestHandle>(owned->control, impl_->scheduler->inbox());
  impl_->scheduler->enqueue(std::move(owned));
  return handle;
}

std::vector<GenerateOutput> Engine::generate(const std::vector<std::string>& prompts,
                                             const SamplingParams& params) {
  std::vector<GenerateRequest> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests[i].text = prompts[i];
    requests[i].sampling = params;
  }
  return generate(requests);
}

std::vector<GenerateOutput> Engine::generate(const std::vector<GenerateRequest>& requests) {
  struct Collector {
    std::mutex mutex;
    std::condition_variable done;
    size_t remaining = 0;
    std::vector<GenerateOutput> outputs;
    std::vector<std::optional<std::string>> errors;
  };
  auto collector = std::make_shared<Collector>();
  collector->outputs.resize(requests.size());
  collector->errors.resize(requests.size());
  std::vector<std::shared_ptr<RequestHandle>> handles;
  auto wait_all = [&] {
    std::unique_lock lock(collector->mutex);
    collector->done.wait(lock, [&] { return collector->remaining == 0; });
  };
  try {
    for (size_t i = 0; i < requests.size(); ++i) {
      {
        std::lock_guard lock(collector->mutex);
        ++collector->remaining;
      }
      try {
        handles.push_back(submit(requests[i], [collector, i](const StreamChunk& chunk) {
          std::lock_guard lock(collector->mutex);
          GenerateOutput& out = collector->outputs[i];
          out.text += chunk.text;
          out.output_ids.insert(out.output_ids.end(), chunk.token_ids.begin(),
                                chunk.token_ids.end());
          out.logprobs.insert(out.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
          out.prompt_tokens = chunk.prompt_tokens;
          out.completion_tokens = chunk.completion_tokens;
          out.cached_tokens = chunk.cached_tokens;
          if (chunk.finished) {
            if (chunk.finish) out.finish = *chunk.finish;
            collector->errors[i] = chunk.error;
            if (--collector->remaining == 0) collector->done.notify_all();
          }
        }));
      } catch (...) {
        std::lock_guard lock(collector->mutex);
        --collector->remaining;
        throw;
      }
    }
  } catch (...) {
    for (auto& handle : handles) handle->cancel();
    wait_all();
    throw;
  }
  wait_all();
  for (size_t i = 0; i < requests.size(); ++i)
    if (collector->errors[i]) fail("request {}: {}", i, *collector->errors[i]);
  return std::move(collector->outputs);
}

}  // namespace nibble
