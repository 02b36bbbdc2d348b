#pragma once
// Runs several independent token sequences through one forward (one ForwardBatch, each
// sequence with its own KV blocks) and hands back every position's logits. All evaluations
// are built on it: perplexity windows, multiple-choice continuations, LAMBADA passages.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/model.h"
#include "runtime/kv_cache.h"
#include "runtime/kv_scales.h"

namespace nibble::eval {

struct BatchScorerOptions {
  // Tokens per forward: sequences are packed until the next one would exceed it (a longer
  // sequence runs alone). Logits of a forward take tokens * vocab * 4 bytes.
  int64_t max_batch_tokens = 2048;
  // Small blocks let multiple-choice continuations share all but < kv_block_size context
  // tokens; the attention kernel walks the block table per key, so size 1 costs little.
  int64_t kv_block_size = 1;
  KvCacheSpec kv;
};

class BatchScorer {
 public:
  BatchScorer(Model& model, BatchScorerOptions options = {});

  // `logits` is [sequence length, vocab], row i predicting token i + 1.
  using Visitor = std::function<void(size_t index, std::span<const float> logits)>;

  // Calls `visit` once per sequence, in order.
  void run(const std::vector<std::vector<int32_t>>& sequences, const Visitor& visit);

  // One context followed by alternative continuations (the choices of a multiple-choice item).
  struct SharedPrefix {
    std::vector<int32_t> context;                     // at least one token
    std::vector<std::vector<int32_t>> continuations;  // each at least one token
  };
  // `logits` is [continuation length, vocab], row j predicting continuation[j].
  using ContinuationVisitor =
      std::function<void(size_t item, size_t choice, std::span<const float> logits)>;

  // The context of each item runs once (no logits) and its K/V blocks are shared by all the
  // item's continuations, which then run in one forward with logits only for their own rows.
  void run_shared_prefix(const std::vector<SharedPrefix>& items, const ContinuationVisitor& visit);

  int64_t vocab() const { return vocab_; }
  int64_t max_batch_tokens() const { return options_.max_batch_tokens; }
  Model& model() { return model_; }

 private:
  void ensure_cache(int64_t tokens, size_t n_sequences);

  Model& model_;
  BatchScorerOptions options_;
  int64_t vocab_;
  std::unique_ptr<KvCache> cache_;
  std::vector<float> logits_;
};

}  // namespace nibble::eval
