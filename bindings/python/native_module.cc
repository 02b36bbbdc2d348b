// nibble._native: the C++ Engine for Python. The Python package (python/nibble) builds the
// SGLang-shaped API on top of these few calls; everything here stays a thin, GIL-aware layer.
//
// Threading: the engine's scheduler thread delivers chunks through a callback that must
// never block and never takes the GIL (a Python thread holding the GIL while it waits for
// the engine would otherwise deadlock it). Chunks wait in a queue per generate() call until
// Python collects them with RequestGroup.poll(), which waits with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "core/error.h"
#include "model/loader.h"
#include "nibble/engine.h"
#include "tokenizer/tokenizer.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace nibble::python {
namespace {

// Text from the engine is valid UTF-8 by contract; "replace" keeps a broken byte from ever
// becoming an exception halfway through a stream.
nb::str utf8(const std::string& text) {
  return nb::steal<nb::str>(
      PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace"));
}

nb::object matched_stop(const FinishReason& finish) {
  if (const auto* id = std::get_if<int32_t>(&finish.matched)) return nb::int_(*id);
  if (const auto* text = std::get_if<std::string>(&finish.matched)) return utf8(*text);
  return nb::none();
}

nb::dict chunk_to_dict(const StreamChunk& chunk) {
  nb::dict d;
  d["text"] = utf8(chunk.text);
  nb::list ids;
  for (int32_t id : chunk.token_ids) ids.append(id);
  d["token_ids"] = ids;
  nb::list logprobs;
  for (const TokenLogprob& entry : chunk.logprobs) {
    nb::list top;
    for (const auto& [id, logprob] : entry.top) top.append(nb::make_tuple(id, logprob));
    logprobs.append(nb::make_tuple(entry.token, entry.logprob, top));
  }
  d["logprobs"] = logprobs;
  d["finished"] = chunk.finished;
  d["finish_type"] =
      chunk.finish ? nb::object(nb::str(chunk.finish->name().data(), chunk.finish->name().size()))
                   : nb::none();
  d["matched"] = chunk.finish ? matched_stop(*chunk.finish) : nb::none();
  d["error"] = chunk.error ? nb::object(utf8(*chunk.error)) : nb::none();
  d["prompt_tokens"] = chunk.prompt_tokens;
  d["completion_tokens"] = chunk.completion_tokens;
  d["cached_tokens"] = chunk.cached_tokens;
  return d;
}

// The requests of one generate() call. The engine thread pushes chunks tagged with the
// request's index; Python waits on one queue, however many prompts the call has.
class RequestGroup {
 public:
  RequestGroup() = default;
  // Requests dropped before their end (a `break` out of a streaming loop, an exception) free
  // their KV blocks instead of generating for nobody.
  ~RequestGroup() { cancel(); }
  RequestGroup(const RequestGroup&) = delete;
  RequestGroup& operator=(const RequestGroup&) = delete;

  std::function<void(const StreamChunk&)> callback_for(size_t index) {
    return [queue = queue_, index](const StreamChunk& chunk) {
      {
        std::lock_guard lock(queue->mutex);
        queue->chunks.emplace_back(index, chunk);
      }
      queue->ready.notify_all();
    };
  }
  void add(std::shared_ptr<RequestHandle> handle) {
    handles_.push_back(std::move(handle));
    finished_.push_back(false);
  }

  // The chunks queued so far as dicts with their request's "index"; when none are, waits up
  // to `timeout_s` for one. Returns [] on timeout, so the caller gets back to Python (and to
  // KeyboardInterrupt) regularly.
  nb::list poll(double timeout_s) {
    std::deque<std::pair<size_t, StreamChunk>> taken;
    {
      nb::gil_scoped_release release;
      std::unique_lock lock(queue_->mutex);
      const auto timeout = std::chrono::duration<double>(std::max(0.0, timeout_s));
      queue_->ready.wait_for(lock, timeout, [&] { return !queue_->chunks.empty(); });
      taken.swap(queue_->chunks);
    }
    nb::list out;
    for (const auto& [index, chunk] : taken) {
      if (chunk.finished && index < finished_.size()) finished_[index] = true;
      nb::dict d = chunk_to_dict(chunk);
      d["index"] = index;
      out.append(d);
    }
    return out;
  }

  // Safe at any time, also after a request ended or the engine shut down.
  void cancel() {
    for (size_t i = 0; i < handles_.size(); ++i) {
      if (!finished_[i]) handles_[i]->cancel();
    }
  }
  bool done() const {
    return std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; });
  }
  size_t size() const { return handles_.size(); }

 private:
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::pair<size_t, StreamChunk>> chunks;
  };
  std::shared_ptr<Queue> queue_ = std::make_shared<Queue>();
  std::vector<std::shared_ptr<RequestHandle>> handles_;
  std::vector<bool> finished_;
};

class PyEngine {
 public:
  explicit PyEngine(const EngineArgs& args) {
    nb::gil_scoped_release release;  // loading and repacking weights takes a while
    engine_ = std::make_shared<Engine>(args);
  }

  // Destroys the engine now (unfinished requests end with finish "abort"). Methods called
  // afterwards raise. A call still running in another thread keeps the engine alive until it
  // returns; the scheduler thread never needs the GIL, so destroying it under the GIL is safe.
  void shutdown() {
    std::shared_ptr<Engine> engine = std::move(engine_);
    engine_.reset();
    nb::gil_scoped_release release;
    engine.reset();
  }
  bool alive() const { return engine_ != nullptr; }

  // Adds one request to `group`. Throws NibbleError for an invalid request (nothing is added).
  void submit(RequestGroup& group, std::optional<std::string> text,
              std::optional<std::vector<int32_t>> input_ids, const SamplingParams& sampling,
              bool return_logprob, int32_t top_logprobs_num) {
    std::shared_ptr<Engine> engine = get();
    GenerateRequest request;
    if (text) request.text = std::move(*text);
    if (input_ids) request.input_ids = std::move(*input_ids);
    request.sampling = sampling;
    request.return_logprob = return_logprob;
    request.top_logprobs_num = top_logprobs_num;
    auto callback = group.callback_for(group.size());
    std::shared_ptr<RequestHandle> handle;
    {
      nb::gil_scoped_release release;  // tokenizing a long prompt is real work
      handle = engine->submit(std::move(request), std::move(callback));
    }
    group.add(std::move(handle));
  }

  nb::dict args() const {
    std::shared_ptr<Engine> engine = get();
    const EngineArgs& a = engine->args();
    nb::dict d;
    d["model_path"] = a.model_path;
    d["dtype"] = a.dtype;
    d["quantization"] = a.quantization;
    d["torchao_config"] = a.torchao_config;
    d["kv_cache_dtype"] = a.kv_cache_dtype;
    d["context_length"] = a.context_length;
    d["max_running_requests"] = a.max_running_requests;
    d["max_total_tokens"] = a.max_total_tokens;
    d["chunked_prefill_size"] = a.chunked_prefill_size;
    d["disable_radix_cache"] = a.disable_radix_cache;
    d["threads"] = a.threads;
    d["chat_template"] = a.chat_template;
    d["served_model_name"] = a.served_model_name;
    d["random_seed"] = a.random_seed ? nb::object(nb::int_(*a.random_seed)) : nb::none();
    return d;
  }

  nb::dict model_info() const {
    std::shared_ptr<Engine> engine = get();
    const ModelSource& source = engine->model();
    const GenerationDefaults& g = source.generation;
    nb::dict defaults;
    if (g.temperature) defaults["temperature"] = *g.temperature;
    if (g.top_p) defaults["top_p"] = *g.top_p;
    if (g.top_k) defaults["top_k"] = *g.top_k;
    if (g.min_p) defaults["min_p"] = *g.min_p;
    if (g.repetition_penalty) defaults["repetition_penalty"] = *g.repetition_penalty;
    nb::dict d;
    d["model_path"] = source.path.string();
    d["format"] = source.format;
    d["model_type"] = source.config.model_type;
    d["vocab_size"] = source.tokenizer ? source.tokenizer->vocab_size() : source.config.vocab_size;
    d["has_tokenizer"] = source.tokenizer != nullptr;
    d["generation_defaults"] = defaults;
    nb::list stop_ids;
    for (int32_t id : source.stop_ids) stop_ids.append(id);
    d["stop_token_ids"] = stop_ids;
    return d;
  }

  nb::dict stats() const {
    const EngineStats s = get()->stats();
    nb::dict d;
    d["running_requests"] = s.running_requests;
    d["waiting_requests"] = s.waiting_requests;
    d["kv_tokens_used"] = s.kv_tokens_used;
    d["kv_tokens_total"] = s.kv_tokens_total;
    d["kv_tokens_cached"] = s.kv_tokens_cached;
    d["prompt_tokens_total"] = s.prompt_tokens_total;
    d["generation_tokens_total"] = s.generation_tokens_total;
    d["cached_prompt_tokens_total"] = s.cached_prompt_tokens_total;
    d["requests_finished_total"] = s.requests_finished_total;
    d["preemptions_total"] = s.preemptions_total;
    return d;
  }

  void flush_cache() {
    std::shared_ptr<Engine> engine = get();
    nb::gil_scoped_release release;
    engine->flush_cache();
  }

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const {
    std::shared_ptr<Engine> engine = get();
    const Tokenizer& tokenizer = require_tokenizer(*engine);
    nb::gil_scoped_release release;
    return tokenizer.encode(text, add_special_tokens);
  }

  nb::str decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    std::shared_ptr<Engine> engine = get();
    return utf8(require_tokenizer(*engine).decode_text(ids, skip_special_tokens));
  }

 private:
  std::shared_ptr<Engine> get() const {
    NIBBLE_CHECK(engine_ != nullptr, "the engine is shut down (Engine.shutdown() was called)");
    return engine_;
  }
  static const Tokenizer& require_tokenizer(const Engine& engine) {
    const ModelSource& source = engine.model();
    NIBBLE_CHECK(source.tokenizer != nullptr, "{}: the model has no tokenizer (tokenizer.json)",
                 source.path.string());
    return *source.tokenizer;
  }

  std::shared_ptr<Engine> engine_;
};

}  // namespace
}  // namespace nibble::python

NB_MODULE(_native, m) {
  using namespace nibble;
  using namespace nibble::python;
  m.doc() = "nibble's C++ engine (use the `nibble` package, not this module)";

  nb::exception<Error>(m, "NibbleError", PyExc_RuntimeError);
  // An Engine still referenced from a module's globals at exit was already shut down by the
  // package's atexit hook; the object itself is freed in whatever order finalization picks.
  nb::set_leak_warnings(false);
  // The command line's default: the engine's info lines are for servers, not for scripts.
  spdlog::set_level(spdlog::level::warn);

  m.def(
      "set_log_level",
      [](const std::string& level) {
        const auto parsed = spdlog::level::from_str(level);
        NIBBLE_CHECK(parsed != spdlog::level::off || level == "off",
                     "log_level {}: use trace, debug, info, warn, error or off", level);
        spdlog::set_level(parsed);
      },
      "level"_a);
  m.def(
      "default_model_path", [] { return default_model_path().string(); },
      "The embedded default model: $NIBBLE_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf");

  nb::class_<EngineArgs>(m, "EngineArgs")
      .def(nb::init<>())
      .def_rw("model_path", &EngineArgs::model_path)
      .def_rw("dtype", &EngineArgs::dtype)
      .def_rw("quantization", &EngineArgs::quantization)
      .def_rw("torchao_config", &EngineArgs::torchao_config)
      .def_rw("modelopt_export_path", &EngineArgs::modelopt_export_path)
      .def_rw("modelopt_checkpoint_save_path", &EngineArgs::modelopt_checkpoint_save_path)
      .def_rw("modelopt_checkpoint_restore_path", &EngineArgs::modelopt_checkpoint_restore_path)
      .def_rw("kv_cache_dtype", &EngineArgs::kv_cache_dtype)
      .def_rw("context_length", &EngineArgs::context_length)
      .def_rw("max_running_requests", &EngineArgs::max_running_requests)
      .def_rw("max_total_tokens", &EngineArgs::max_total_tokens)
      .def_rw("chunked_prefill_size", &EngineArgs::chunked_prefill_size)
      .def_rw("disable_radix_cache", &EngineArgs::disable_radix_cache)
      .def_rw("threads", &EngineArgs::threads)
      .def_rw("chat_template", &EngineArgs::chat_template)
      .def_rw("served_model_name", &EngineArgs::served_model_name)
      .def_rw("random_seed", &EngineArgs::random_seed);

  nb::class_<SamplingParams>(m, "SamplingParams")
      .def(nb::init<>())
      .def_rw("temperature", &SamplingParams::temperature)
      .def_rw("top_p", &SamplingParams::top_p)
      .def_rw("top_k", &SamplingParams::top_k)
      .def_rw("min_p", &SamplingParams::min_p)
      .def_rw("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_rw("frequency_penalty", &SamplingParams::frequency_penalty)
      .def_rw("presence_penalty", &SamplingParams::presence_penalty)
      .def_rw("max_new_tokens", &SamplingParams::max_new_tokens)
      .def_rw("stop", &SamplingParams::stop)
      .def_rw("stop_token_ids", &SamplingParams::stop_token_ids)
      .def_rw("ignore_eos", &SamplingParams::ignore_eos)
      .def_rw("skip_special_tokens", &SamplingParams::skip_special_tokens)
      .def_rw("seed", &SamplingParams::seed)
      .def("validate", &SamplingParams::validate);

  nb::class_<RequestGroup>(m, "RequestGroup")
      .def(nb::init<>())
      .def("poll", &RequestGroup::poll, "timeout_s"_a)
      .def("cancel", &RequestGroup::cancel)
      .def_prop_ro("done", &RequestGroup::done)
      .def("__len__", &RequestGroup::size);

  nb::class_<PyEngine>(m, "Engine")
      .def(nb::init<const EngineArgs&>(), "args"_a)
      .def("shutdown", &PyEngine::shutdown)
      .def_prop_ro("alive", &PyEngine::alive)
      .def("submit", &PyEngine::submit, "group"_a, "text"_a.none(), "input_ids"_a.none(),
           "sampling"_a, "return_logprob"_a, "top_logprobs_num"_a)
      .def("args", &PyEngine::args)
      .def("model_info", &PyEngine::model_info)
      .def("stats", &PyEngine::stats)
      .def("flush_cache", &PyEngine::flush_cache)
      .def("encode", &PyEngine::encode, "text"_a, "add_special_tokens"_a)
      .def("decode", &PyEngine::decode, "ids"_a, "skip_special_tokens"_a);
}
