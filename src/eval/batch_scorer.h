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

namespace nibble::eval {

struct BatchScorerOptions {
  // Tokens per forward: sequences are packed until the next one would exceed it (a longer
  // sequence runs alone). Logits of a forward take tokens * vocab * 4 bytes.
  int64_t max_batch_tokens = 2048;
  int64_t kv_block_size = 16;
};

class BatchScorer {
 public:
  BatchScorer(Model& model, BatchScorerOptions options = {});

  // `logits` is [sequence length, vocab], row i predicting token i + 1.
  using Visitor = std::function<void(size_t index, std::span<const float> logits)>;

  // Calls `visit` once per sequence, in order.
  void run(const std::vector<std::vector<int32_t>>& sequences, const Visitor& visit);

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
