#pragma once
// One request inside the engine: its tokens, KV blocks, sampler, stop checker and streaming
// text state. Owned and touched only by the scheduler thread, except `control`, which a
// RequestHandle on any thread uses to ask for cancellation.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nibble/engine.h"
#include "runtime/radix_cache.h"
#include "runtime/sampler.h"
#include "runtime/stop_checker.h"
#include "tokenizer/incremental_detokenizer.h"

namespace nibble {

struct RequestControl {
  std::atomic<bool> cancelled{false};
};

using ChunkCallback = std::function<void(const StreamChunk&)>;

class Request {
 public:
  // `tokenizer` may be null (the model has none): chunks then carry ids but no text.
  Request(uint64_t id, std::vector<int32_t> prompt, const GenerateRequest& request,
          ChunkCallback on_chunk, const Tokenizer* tokenizer, std::vector<int32_t> eos_ids);

  const uint64_t id;  // arrival order: lower is older and has priority
  std::shared_ptr<RequestControl> control = std::make_shared<RequestControl>();

  // Prompt then sampled tokens; the last sampled token has no KV yet.
  std::vector<int32_t> tokens;
  const int64_t prompt_len;
  int64_t n_cached = 0;  // leading tokens whose K/V sit in block_table

  // KV blocks; the first `shared_blocks` belong to the radix cache and are pinned through
  // `radix_lock`, the rest are this request's own.
  std::vector<int32_t> block_table;
  int64_t shared_blocks = 0;
  RadixCache::Node* radix_lock = nullptr;

  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache (first admission)
  bool admitted_before = false;
  int64_t n_preemptions = 0;

  int64_t max_new_tokens() const { return params_.max_new_tokens; }
  int64_t completion_tokens() const { return n_sampled_; }
  bool finished() const { return finished_; }
  bool cancelled() const { return control->cancelled.load(std::memory_order_relaxed); }
  // Tokens still to run through the model before the next logits: 1 when decoding.
  int64_t pending_tokens() const { return int64_t(tokens.size()) - n_cached; }

  // Samples from `logits` (the raw row; modified), checks stop conditions and streams the
  // result. Returns true when the request finished; its final chunk then waits for
  // deliver_final(), so that the scheduler can free the blocks first.
  bool on_logits(std::span<float> logits);

  // Ends the request now (abort, length cut, error); the final chunk waits for deliver_final().
  void finish(FinishReason reason, std::optional<std::string> error = std::nullopt);
  void deliver_final();

 private:
  StreamChunk make_chunk() const;
  void emit_text(StreamChunk& chunk);
  void deliver(const StreamChunk& chunk);

  SamplingParams params_;
  bool return_logprob_;
  int32_t top_logprobs_num_;
  ChunkCallback on_chunk_;
  Sampler sampler_;
  StopChecker stop_;
  std::vector<int32_t> stop_ids_;
  std::unique_ptr<IncrementalDetokenizer> detokenizer_;
  std::string text_;    // output text so far (complete UTF-8)
  size_t emitted_ = 0;  // bytes of text_ already streamed
  int64_t n_sampled_ = 0;
  bool stopped_by_string_ = false;
  bool finished_ = false;
  std::vector<float> raw_logits_;  // copy for logprobs, taken before penalties
  std::optional<StreamChunk> final_chunk_;
};

// log-softmax of `logits` at `token`, plus the `top_n` best tokens, best first.
TokenLogprob compute_logprobs(std::span<const float> logits, int32_t token, int32_t top_n);

}  // namespace nibble
