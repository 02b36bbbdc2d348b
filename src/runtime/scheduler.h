#pragma once
// Continuous batching on one thread: each step builds one flat ForwardBatch from every
// running decode sequence (one token each) plus prefill chunks up to a token budget, runs
// the model once, samples, checks stops and streams. KV blocks come from the paged cache,
// shared prompt prefixes from the radix cache; when blocks run out the newest request is
// preempted (its KV dropped, recomputed later).
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "model/model.h"
#include "nibble/engine.h"
#include "runtime/kv_cache.h"
#include "runtime/kv_scales.h"
#include "runtime/radix_cache.h"
#include "runtime/request.h"

namespace nibble {

struct SchedulerOptions {
  int64_t max_running_requests = 64;
  int64_t chunked_prefill_size = 512;  // prompt tokens per step
  int64_t block_size = 16;
  int64_t n_blocks = 0;
  bool radix_cache = true;
  KvCacheSpec kv;
};

// What other threads hand to the scheduler thread, under one mutex. Shared with request
// handles so that cancel() stays safe after the engine is gone.
struct SchedulerInbox {
  std::mutex mutex;
  std::condition_variable wake;
  std::condition_variable flushed;
  std::deque<std::unique_ptr<Request>> incoming;
  bool check_cancellations = false;
  uint64_t flush_requested = 0, flush_done = 0;
  bool stopping = false;
  EngineStats stats;  // snapshot published after every step

  void notify_cancel() {
    {
      std::lock_guard lock(mutex);
      check_cancellations = true;
    }
    wake.notify_one();
  }
};

class Scheduler {
 public:
  Scheduler(Model& model, SchedulerOptions options);
  ~Scheduler();  // stops the thread; unfinished requests end with an error chunk
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void enqueue(std::unique_ptr<Request> request);
  void flush_cache();  // waits until the scheduler thread has dropped the prefix cache
  EngineStats stats() const;
  const std::shared_ptr<SchedulerInbox>& inbox() const { return inbox_; }
  int64_t capacity_tokens() const { return options_.n_blocks * options_.block_size; }

 private:
  struct Scheduled {
    Request* request;
    int64_t n_tokens;
  };

  void loop();
  // One engine step; false when there was nothing to run.
  bool step();
  void take_cancellations();
  void admit_waiting(std::vector<Scheduled>& batch, int64_t& budget);
  // Grows the block table towards covering `n_tokens` (evicting unused prefix-cache blocks
  // when needed); returns the tokens it covers, fewer when blocks ran out.
  int64_t reserve(Request& request, int64_t n_tokens);
  std::optional<int32_t> allocate_block();
  // Pins the request's whole, computed blocks in the radix cache.
  void commit_blocks(Request& request);
  // Hands the request's blocks back (to the radix cache where whole and computed).
  void release_blocks(Request& request);
  void preempt(Request& request);
  // A finished request leaves the running set for finished_.
  void retire(Request& request);
  // Publishes the stats, then hands the finished requests their final chunks: by the time a
  // client sees its request end, the blocks are free and stats() says so.
  void deliver_finished();
  Request* newest_running();
  void publish_stats();
  void fail_all(const std::string& message);

  Model& model_;
  SchedulerOptions options_;
  KvCache cache_;
  RadixCache radix_;
  std::shared_ptr<SchedulerInbox> inbox_ = std::make_shared<SchedulerInbox>();

  // Scheduler-thread state.
  std::vector<std::unique_ptr<Request>> running_;   // by arrival (id), oldest first
  std::deque<std::unique_ptr<Request>> waiting_;    // by arrival (id), oldest first
  std::vector<std::unique_ptr<Request>> finished_;  // final chunks not yet delivered
  std::vector<float> logits_;
  EngineStats counters_;

  std::thread thread_;
};

}  // namespace nibble
