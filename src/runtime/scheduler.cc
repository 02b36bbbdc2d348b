#include "runtime/scheduler.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "core/error.h"

namespace nibble {
namespace {

template <typename Container>
void insert_by_arrival(Container& queue, std::unique_ptr<Request> request) {
  auto at =
      std::upper_bound(queue.begin(), queue.end(), request->id,
                       [](uint64_t id, const std::unique_ptr<Request>& r) { return id < r->id; });
  queue.insert(at, std::move(request));
}

}  // namespace

Scheduler::Scheduler(Model& model, SchedulerOptions options)
    : model_(model),
      options_(options),
      cache_(model.config().num_hidden_layers, model.config().num_key_value_heads,
             model.config().head_dim, options.block_size, options.n_blocks, options.kv.dtype),
      radix_(options.block_size) {
  options_.kv.apply(cache_);
  NIBBLE_CHECK(options_.max_running_requests > 0, "max_running_requests must be >= 1, got {}",
               options_.max_running_requests);
  NIBBLE_CHECK(options_.chunked_prefill_size > 0, "chunked_prefill_size must be >= 1, got {}",
               options_.chunked_prefill_size);
  counters_.kv_tokens_total = capacity_tokens();
  publish_stats();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(inbox_->mutex);
    inbox_->stopping = true;
  }
  inbox_->wake.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::enqueue(std::unique_ptr<Request> request) {
  {
    std::lock_guard lock(inbox_->mutex);
    NIBBLE_CHECK(!inbox_->stopping, "the engine is shutting down");
    inbox_->incoming.push_back(std::move(request));
  }
  inbox_->wake.notify_one();
}

void Scheduler::flush_cache() {
  std::unique_lock lock(inbox_->mutex);
  if (inbox_->stopping) return;
  const uint64_t ticket = ++inbox_->flush_requested;
  inbox_->wake.notify_one();
  // From a callback (the scheduler thread itself): waiting would deadlock; the flush happens
  // before the next step.
  if (std::this_thread::get_id() == thread_.get_id()) return;
  inbox_->flushed.wait(lock, [&] { return inbox_->flush_done >= ticket || inbox_->stopping; });
}

EngineStats Scheduler::stats() const {
  std::lock_guard lock(inbox_->mutex);
  EngineStats s = inbox_->stats;
  s.waiting_requests += int64_t(inbox_->incoming.size());
  return s;
}

void Scheduler::publish_stats() {
  counters_.running_requests = int64_t(running_.size());
  counters_.waiting_requests = int64_t(waiting_.size());
  counters_.kv_tokens_used = (cache_.n_blocks() - cache_.free_blocks()) * options_.block_size;
  counters_.kv_tokens_cached =
      options_.radix_cache ? radix_.evictable_blocks() * options_.block_size : 0;
  std::lock_guard lock(inbox_->mutex);
  inbox_->stats = counters_;
}

void Scheduler::loop() {
  bool busy = false;
  bool stuck = false;
  for (;;) {
    bool flush = false;
    uint64_t flush_ticket = 0;
    {
      std::unique_lock lock(inbox_->mutex);
      auto has_news = [&] {
        return inbox_->stopping || !inbox_->incoming.empty() || inbox_->check_cancellations ||
               inbox_->flush_requested != inbox_->flush_done;
      };
      if (!busy) {
        inbox_->wake.wait(lock, has_news);
      } else if (stuck) {
        // Work is queued but nothing could run (should not happen: a lone request always
        // fits). Wait for news instead of spinning.
        inbox_->wake.wait_for(lock, std::chrono::milliseconds(20), has_news);
      }
      if (inbox_->stopping) break;
      while (!inbox_->incoming.empty()) {
        std::unique_ptr<Request> request = std::move(inbox_->incoming.front());
        inbox_->incoming.pop_front();
        if (request->max_new_tokens() == 0) {
          request->finish(FinishReason{FinishReason::Kind::kLength, {}});
          ++counters_.requests_finished_total;
          finished_.push_back(std::move(request));
          continue;
        }
        insert_by_arrival(waiting_, std::move(request));
      }
      inbox_->check_cancellations = false;
      flush_ticket = inbox_->flush_requested;
      flush = flush_ticket != inbox_->flush_done;
    }
    if (flush) {
      radix_.evict(std::numeric_limits<int64_t>::max(),
                   [&](int32_t block) { cache_.free_block(block); });
      publish_stats();
      {
        std::lock_guard lock(inbox_->mutex);
        inbox_->flush_done = flush_ticket;
      }
      inbox_->flushed.notify_all();
    }
    take_cancellations();
    stuck = !step();
    deliver_finished();
    busy = !running_.empty() || !waiting_.empty();
  }
  fail_all("the engine is shutting down");
  deliver_finished();
  inbox_->flushed.notify_all();
}

void Scheduler::deliver_finished() {
  publish_stats();
  for (auto& request : finished_) request->deliver_final();
  finished_.clear();
}

void Scheduler::fail_all(const std::string& message) {
  std::deque<std::unique_ptr<Request>> incoming;
  {
    std::lock_guard lock(inbox_->mutex);
    incoming.swap(inbox_->incoming);
  }
  const FinishReason abort{FinishReason::Kind::kAbort, {}};
  for (auto& r : running_) release_blocks(*r);
  auto end_all = [&](auto& queue) {
    for (auto& r : queue) {
      r->finish(abort, message);
      finished_.push_back(std::move(r));
    }
    queue.clear();
  };
  end_all(running_);
  end_all(waiting_);
  end_all(incoming);
}

void Scheduler::take_cancellations() {
  const FinishReason abort{FinishReason::Kind::kAbort, {}};
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (!(*it)->cancelled()) {
      ++it;
      continue;
    }
    release_blocks(**it);
    (*it)->finish(abort);
    ++counters_.requests_finished_total;
    finished_.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (!(*it)->cancelled()) {
      ++it;
      continue;
    }
    release_blocks(**it);
    (*it)->finish(abort);
    ++counters_.requests_finished_total;
    finished_.push_back(std::move(*it));
    it = running_.erase(it);
  }
}

std::optional<int32_t> Scheduler::allocate_block() { return cache_.allocate_block(); }

int64_t Scheduler::reserve(Request& request, int64_t n_tokens) {
  const int64_t block = options_.block_size;
  const int64_t want_blocks = (n_tokens + block - 1) / block;
  const int64_t missing = want_blocks - int64_t(request.block_table.size());
  if (missing <= 0) return int64_t(request.block_table.size()) * block;
  if (options_.radix_cache && missing > cache_.free_blocks()) {
    radix_.evict(missing - cache_.free_blocks(), [&](int32_t b) { cache_.free_block(b); });
  }
  while (int64_t(request.block_table.size()) < want_blocks) {
    auto b = allocate_block();
    if (!b) break;
    request.block_table.push_back(*b);
  }
  return int64_t(request.block_table.size()) * block;
}

void Scheduler::commit_blocks(Request& request) {
  if (!options_.radix_cache) return;
  const int64_t n_full =
      std::min(request.n_cached / options_.block_size, int64_t(request.block_table.size()));
  if (n_full <= request.shared_blocks) return;
  const auto tokens =
      std::span<const int32_t>(request.tokens).first(size_t(n_full * options_.block_size));
  const auto blocks = std::span<const int32_t>(request.block_table).first(size_t(n_full));
  RadixCache::Match tree = radix_.insert(tokens, blocks);
  for (int64_t i = request.shared_blocks; i < n_full; ++i) {
    int32_t& mine = request.block_table[size_t(i)];
    if (tree.blocks[size_t(i)] != mine) {
      // Another request cached the same tokens first: use its block, drop the duplicate.
      cache_.free_block(mine);
      mine = tree.blocks[size_t(i)];
    }
  }
  radix_.lock(tree.last);
  radix_.unlock(request.radix_lock);
  request.radix_lock = tree.last;
  request.shared_blocks = n_full;
}

void Scheduler::release_blocks(Request& request) {
  if (options_.radix_cache) {
    commit_blocks(request);
    radix_.unlock(request.radix_lock);
  }
  for (size_t i = size_t(request.shared_blocks); i < request.block_table.size(); ++i)
    cache_.free_block(request.block_table[i]);
  request.block_table.clear();
  request.shared_blocks = 0;
  request.radix_lock = nullptr;
  request.n_cached = 0;
}

void Scheduler::preempt(Request& request) {
  release_blocks(request);
  ++request.n_preemptions;
  ++counters_.preemptions_total;
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const auto& r) { return r.get() == &request; });
  std::unique_ptr<Request> owned = std::move(*it);
  running_.erase(it);
  insert_by_arrival(waiting_, std::move(owned));
}

void Scheduler::retire(Request& request) {
  release_blocks(request);
  ++counters_.requests_finished_total;
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const auto& r) { return r.get() == &request; });
  finished_.push_back(std::move(*it));
  running_.erase(it);
}

Request* Scheduler::newest_running() { return running_.empty() ? nullptr : running_.back().get(); }

void Scheduler::admit_waiting(std::vector<Scheduled>& batch, int64_t& budget) {
  while (!waiting_.empty() && int64_t(running_.size()) < options_.max_running_requests &&
         budget > 0) {
    Request& r = *waiting_.front();
    if (options_.radix_cache && r.n_cached == 0) {
      // At least the last token must run through the model to give logits.
      const auto lookup = std::span<const int32_t>(r.tokens).first(r.tokens.size() - 1);
      RadixCache::Match hit = radix_.match(lookup);
      radix_.lock(hit.last);
      r.block_table = hit.blocks;
      r.shared_blocks = int64_t(hit.blocks.size());
      r.radix_lock = hit.last;
      r.n_cached = r.shared_blocks * options_.block_size;
    }
    int64_t n = std::min(r.pending_tokens(), budget);
    const int64_t covered = reserve(r, r.n_cached + n);
    if (covered <= r.n_cached) {
      // No room even for one token: wait for running requests to free blocks. The oldest
      // waiting request goes first, so nothing starves.
      release_blocks(r);
      break;
    }
    n = std::min(n, covered - r.n_cached);
    if (!r.admitted_before) {
      r.admitted_before = true;
      r.cached_tokens = std::min(r.n_cached, r.prompt_len);
      counters_.prompt_tokens_total += r.prompt_len;
      counters_.cached_prompt_tokens_total += r.cached_tokens;
    }
    batch.push_back({&r, n});
    budget -= n;
    std::unique_ptr<Request> owned = std::move(waiting_.front());
    waiting_.pop_front();
    insert_by_arrival(running_, std::move(owned));
  }
}

bool Scheduler::step() {
  std::vector<Scheduled> batch;
  int64_t budget = options_.chunked_prefill_size;
  bool preempted = false;
  // Oldest first: on a shortage the newest running request gives its blocks back.
  for (size_t i = 0; i < running_.size(); ++i) {
    Request& r = *running_[i];
    int64_t n = r.pending_tokens();
    const bool decoding = n == 1;
    if (!decoding) {
      n = std::min(n, budget);
      if (n <= 0) continue;
    }
    bool scheduled = false;
    for (;;) {
      const int64_t covered = reserve(r, r.n_cached + n);
      if (covered >= r.n_cached + n) {
        scheduled = true;
        break;
      }
      Request* victim = newest_running();
      if (victim != &r) {
        preempt(*victim);
        preempted = true;
        continue;
      }
      if (!decoding && covered > r.n_cached) {
        n = covered - r.n_cached;  // a shorter prefill chunk fits
        scheduled = true;
        break;
      }
      if (running_.size() == 1) {
        // Alone and the whole cache cannot hold one more token: cut it here, as a context
        // limit would.
        r.finish(FinishReason{FinishReason::Kind::kLength, {}});
        retire(r);
        break;
      }
      if (decoding) {
        preempt(r);
        preempted = true;
      }
      break;  // a prefill chunk waits for blocks
    }
    if (!scheduled) break;  // r was the newest: nothing after it
    if (!decoding) budget -= n;
    batch.push_back({&r, n});
  }
  if (!preempted) admit_waiting(batch, budget);
  if (batch.empty()) return false;

  ForwardBatch forward;
  for (const Scheduled& s : batch) {
    Request& r = *s.request;
    SequenceBatch seq;
    seq.token_offset = int64_t(forward.token_ids.size());
    seq.n_tokens = s.n_tokens;
    seq.n_cached = r.n_cached;
    seq.block_table = r.block_table;
    seq.want_logits = r.n_cached + s.n_tokens == int64_t(r.tokens.size());
    forward.token_ids.insert(forward.token_ids.end(), r.tokens.begin() + r.n_cached,
                             r.tokens.begin() + r.n_cached + s.n_tokens);
    forward.seqs.push_back(std::move(seq));
  }
  try {
    model_.forward(forward, cache_, logits_);
  } catch (const std::exception& e) {
    // Fail the requests of this batch, keep serving the others.
    for (const Scheduled& s : batch) {
      s.request->finish(FinishReason{FinishReason::Kind::kAbort, {}},
                        std::string("model forward failed: ") + e.what());
      retire(*s.request);
    }
    return true;
  }
  const auto vocab = size_t(model_.config().vocab_size);
  size_t row = 0;
  std::vector<Request*> done;
  for (size_t i = 0; i < batch.size(); ++i) {
    Request& r = *batch[i].request;
    r.n_cached += batch[i].n_tokens;
    if (forward.seqs[i].want_logits) {
      ++counters_.generation_tokens_total;
      if (r.on_logits(std::span<float>(logits_).subspan(row * vocab, vocab))) done.push_back(&r);
      ++row;
    }
    commit_blocks(r);
  }
  for (Request* r : done) retire(*r);
  return true;
}

}  // namespace nibble
