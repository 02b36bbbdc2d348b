#include "server/server_context.h"

#include <algorithm>
#include <filesystem>

#include "model/loader.h"
#include "server/api_error.h"
#include "server/generation_job.h"

namespace nibble::server {

ServerContext::ServerContext(Engine& engine, ServerConfig config)
    : engine_(engine), config_(std::move(config)), auth_(config_.api_key) {
  const ModelSource& source = engine_.model();
  const EngineArgs& args = engine_.args();
  model_name_ = args.served_model_name;
  if (model_name_.empty()) {
    model_name_ = args.model_path.empty()
                      ? source.path.filename().string()
                      : std::filesystem::path(args.model_path).filename().string();
    if (model_name_.empty())
      model_name_ = std::filesystem::path(args.model_path).parent_path().filename().string();
  }
  context_length_ =
      args.context_length > 0 ? args.context_length : source.config.max_position_embeddings;
  vocab_size_ = source.tokenizer ? source.tokenizer->vocab_size() : source.config.vocab_size;
  created_unix_ = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
}

const Tokenizer& ServerContext::tokenizer() const {
  const auto& tokenizer = engine_.model().tokenizer;
  if (!tokenizer) {
    throw ApiError(400, "invalid_request_error",
                   "the model has no tokenizer: send token ids (prompt as a list of ints, or "
                   "input_ids) instead of text");
  }
  return *tokenizer;
}

void ServerContext::check_admission(int64_t new_requests) {
  if (draining_) {
    ApiError error(503, "service_unavailable_error", "the server is shutting down");
    error.headers.emplace_back("Retry-After", "5");
    throw error;
  }
  const EngineStats stats = engine_.stats();
  // Requests that find no free running slot wait; only the waiting ones count against the cap.
  const int64_t free_slots = std::max<int64_t>(
      0, engine_.args().max_running_requests - stats.running_requests - stats.waiting_requests);
  const int64_t would_wait = std::max<int64_t>(0, new_requests - free_slots);
  if (would_wait > 0 && stats.waiting_requests + would_wait > config_.max_queued_requests) {
    ApiError error(503, "service_unavailable_error",
                   fmt::format("the request queue is full ({} waiting, limit {}); retry later",
                               stats.waiting_requests, config_.max_queued_requests));
    error.headers.emplace_back("Retry-After", "1");
    throw error;
  }
}

void ServerContext::track_job(std::weak_ptr<GenerationJob> job) {
  std::lock_guard lock(jobs_mutex_);
  std::erase_if(jobs_, [](const auto& weak) { return weak.expired(); });
  jobs_.push_back(std::move(job));
}

void ServerContext::abort_all_jobs() {
  std::lock_guard lock(jobs_mutex_);
  for (const auto& weak : jobs_) {
    if (auto job = weak.lock()) job->cancel_async();
  }
}

}  // namespace nibble::server
