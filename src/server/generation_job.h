#pragma once
// One HTTP request's generations (n choices, possibly several prompts) in the engine. Engine
// callbacks are posted onto the connection's strand, so all state here is touched by one
// thread at a time; a client that hangs up cancels every choice.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nibble/engine.h"
#include "server/http_server.h"
#include "server/server_context.h"

namespace nibble::server {

struct ChoiceState {
  std::string text;
  std::vector<int32_t> output_ids;
  std::vector<TokenLogprob> logprobs;
  std::optional<FinishReason> finish;
  std::optional<std::string> error;
  bool done = false;
  bool aborted = false;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  std::optional<std::chrono::steady_clock::time_point> first_token;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

class GenerationJob : public std::enable_shared_from_this<GenerationJob> {
 public:
  // Runs on the strand for every chunk of choice `index` (after its state is updated).
  using ChunkFn = std::function<void(size_t index, const StreamChunk& chunk)>;
  using DoneFn = std::function<void()>;

  // Submits every request; throws ApiError (400 for an invalid request, 503 when full)
  // after cancelling any already submitted.
  static std::shared_ptr<GenerationJob> start(ServerContext& context,
                                              std::shared_ptr<Exchange> exchange,
                                              std::vector<GenerateRequest> requests,
                                              ChunkFn on_chunk, DoneFn on_done);
  ~GenerationJob();

  const std::vector<ChoiceState>& choices() const { return choices_; }
  // Prompt tokens count once per prompt, not once per choice (OpenAI's accounting for n > 1).
  Usage usage(size_t choices_per_prompt) const;
  void cancel();
  // From any thread: cancels on the job's strand.
  void cancel_async();
  bool cancelled() const { return cancelled_; }
  // The first error among the choices, if any failed.
  std::optional<std::string> first_error() const;
  const std::string& id() const { return id_; }

 private:
  GenerationJob(ServerContext& context, std::shared_ptr<Exchange> exchange);
  void on_chunk(size_t index, const StreamChunk& chunk);

  ServerContext& context_;
  std::shared_ptr<Exchange> exchange_;
  std::vector<std::shared_ptr<RequestHandle>> handles_;
  std::vector<ChoiceState> choices_;
  ChunkFn chunk_fn_;
  DoneFn done_fn_;
  size_t remaining_ = 0;
  bool cancelled_ = false;
  std::string id_;
};

// A random request id: 24 hex digits.
std::string random_request_id();

}  // namespace nibble::server
