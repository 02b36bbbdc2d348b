#include "server/generation_job.h"

#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "server/api_error.h"

namespace nibble::server {

std::string random_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:08x}", rng(), uint32_t(rng()));
}

GenerationJob::GenerationJob(ServerContext& context, std::shared_ptr<Exchange> exchange)
    : context_(context), exchange_(std::move(exchange)), id_(random_request_id()) {
  ++context_.active_jobs();
}

GenerationJob::~GenerationJob() { --context_.active_jobs(); }

std::shared_ptr<GenerationJob> GenerationJob::start(ServerContext& context,
                                                    std::shared_ptr<Exchange> exchange,
                                                    std::vector<GenerateRequest> requests,
                                                    ChunkFn on_chunk, DoneFn on_done) {
  context.check_admission(static_cast<int64_t>(requests.size()));
  std::shared_ptr<GenerationJob> job(new GenerationJob(context, exchange));
  job->chunk_fn_ = std::move(on_chunk);
  job->done_fn_ = std::move(on_done);
  job->choices_.resize(requests.size());
  job->remaining_ = requests.size();
  for (size_t i = 0; i < requests.size(); ++i) {
    auto callback = [job, i, exchange](const StreamChunk& chunk) {
      // The engine thread must not block: copy the chunk and hop onto the strand.
      exchange->post([job, i, chunk] { job->on_chunk(i, chunk); });
    };
    try {
      job->handles_.push_back(context.engine().submit(std::move(requests[i]), std::move(callback)));
    } catch (const Error& error) {
      job->cancel();
      throw ApiError(400, "invalid_request_error", error.what());
    } catch (...) {
      job->cancel();
      throw;
    }
  }
  context.track_job(job);
  exchange->on_disconnect([weak = std::weak_ptr<GenerationJob>(job)] {
    if (auto self = weak.lock()) self->cancel();
  });
  return job;
}

void GenerationJob::cancel_async() {
  exchange_->post([self = shared_from_this()] { self->cancel(); });
}

void GenerationJob::cancel() {
  if (cancelled_) return;
  cancelled_ = true;
  for (auto& handle : handles_) {
    if (handle) handle->cancel();
  }
}

void GenerationJob::on_chunk(size_t index, const StreamChunk& chunk) {
  ChoiceState& choice = choices_[index];
  if (choice.done) return;
  if (!chunk.token_ids.empty() && !choice.first_token) {
    choice.first_token = std::chrono::steady_clock::now();
  }
  choice.text += chunk.text;
  choice.output_ids.insert(choice.output_ids.end(), chunk.token_ids.begin(), chunk.token_ids.end());
  choice.logprobs.insert(choice.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
  choice.prompt_tokens = std::max(choice.prompt_tokens, chunk.prompt_tokens);
  choice.completion_tokens = std::max(choice.completion_tokens, chunk.completion_tokens);
  choice.cached_tokens = std::max(choice.cached_tokens, chunk.cached_tokens);
  if (chunk.finished) {
    choice.done = true;
    choice.finish = chunk.finish;
    choice.error = chunk.error;
    choice.aborted = (!chunk.finish && !chunk.error) ||
                     (chunk.finish && chunk.finish->kind == FinishReason::Kind::kAbort);
    if (choice.completion_tokens == 0) {
      choice.completion_tokens = static_cast<int64_t>(choice.output_ids.size());
    }
    const auto now = std::chrono::steady_clock::now();
    const auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
    const double e2e = seconds(now - exchange_->arrival());
    const double ttft =
        choice.first_token ? seconds(*choice.first_token - exchange_->arrival()) : e2e;
    context_.metrics().record_request(ttft, e2e, choice.completion_tokens,
                                      choice.aborted || cancelled_);
    if (chunk.error) spdlog::warn("request {} choice {} failed: {}", id_, index, *chunk.error);
  }
  if (chunk_fn_) chunk_fn_(index, chunk);
  if (chunk.finished && --remaining_ == 0) {
    handles_.clear();
    if (done_fn_) done_fn_();
    // Break the cycle job -> callbacks -> job.
    chunk_fn_ = {};
    done_fn_ = {};
  }
}

Usage GenerationJob::usage(size_t choices_per_prompt) const {
  Usage usage;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_per_prompt == 0 || i % choices_per_prompt == 0) {
      usage.prompt_tokens += choices_[i].prompt_tokens;
      usage.cached_tokens += choices_[i].cached_tokens;
    }
    usage.completion_tokens += choices_[i].completion_tokens;
  }
  return usage;
}

std::optional<std::string> GenerationJob::first_error() const {
  for (const auto& choice : choices_) {
    if (choice.error) return choice.error;
  }
  return std::nullopt;
}

}  // namespace nibble::server
