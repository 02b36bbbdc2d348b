#pragma once
// What every route handler shares: the engine, the server's options, metrics, auth and the
// draining flag.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nibble/engine.h"
#include "server/auth.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace nibble {
class Tokenizer;
}

namespace nibble::server {

class GenerationJob;

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 30000;
  std::string api_key;
  HttpLimits http;
  int64_t max_queued_requests = 256;  // waiting requests beyond this get 503 + Retry-After
  int64_t max_choices = 64;           // cap on n (times the number of prompts)
  std::chrono::milliseconds shutdown_timeout{30'000};
  int io_threads = 2;
};

class ServerContext {
 public:
  ServerContext(Engine& engine, ServerConfig config);

  Engine& engine() { return engine_; }
  const Engine& engine() const { return engine_; }
  const ServerConfig& config() const { return config_; }
  Metrics& metrics() { return metrics_; }
  const ApiKeyAuth& auth() const { return auth_; }

  const std::string& model_name() const { return model_name_; }
  int64_t context_length() const { return context_length_; }
  int64_t vocab_size() const { return vocab_size_; }
  const Tokenizer& tokenizer() const;  // throws ApiError 400 when the model has none

  // 503 with Retry-After while draining or when the waiting queue is full.
  void check_admission(int64_t new_requests);

  bool draining() const { return draining_; }
  void set_draining() { draining_ = true; }
  std::atomic<int64_t>& active_jobs() { return active_jobs_; }
  // Jobs still running, so that a shutdown past its drain timeout can abort them.
  void track_job(std::weak_ptr<GenerationJob> job);
  void abort_all_jobs();
  int64_t created_unix() const { return created_unix_; }

 private:
  Engine& engine_;
  ServerConfig config_;
  Metrics metrics_;
  ApiKeyAuth auth_;
  std::string model_name_;
  int64_t context_length_ = 0;
  int64_t vocab_size_ = 0;
  int64_t created_unix_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_jobs_{0};
  std::mutex jobs_mutex_;
  std::vector<std::weak_ptr<GenerationJob>> jobs_;
};

}  // namespace nibble::server
