#include "eval/batch_scorer.h"

#include "core/error.h"

namespace nibble::eval {

BatchScorer::BatchScorer(Model& model, BatchScorerOptions options)
    : model_(model), options_(options), vocab_(model.config().vocab_size) {
  NIBBLE_CHECK(options_.max_batch_tokens > 0, "max batch tokens must be positive, got {}",
               options_.max_batch_tokens);
}

void BatchScorer::ensure_cache(int64_t tokens, size_t n_sequences) {
  const int64_t block = options_.kv_block_size;
  // Each sequence rounds up to whole blocks.
  const int64_t needed = tokens / block + int64_t(n_sequences) + 1;
  if (cache_ && cache_->n_blocks() >= needed) return;
  const ModelConfig& c = model_.config();
  cache_ = std::make_unique<KvCache>(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, block,
                                     needed);
}

void BatchScorer::run(const std::vector<std::vector<int32_t>>& sequences, const Visitor& visit) {
  const int64_t block = options_.kv_block_size;
  size_t next = 0;
  while (next < sequences.size()) {
    // Pack sequences [next, end) into one forward.
    size_t end = next;
    int64_t tokens = 0;
    while (end < sequences.size()) {
      const int64_t n = int64_t(sequences[end].size());
      if (end > next && tokens + n > options_.max_batch_tokens) break;
      tokens += n;
      ++end;
    }
    ensure_cache(tokens, end - next);
    ForwardBatch batch;
    batch.token_ids.reserve(size_t(tokens));
    int32_t next_block = 0;
    for (size_t i = next; i < end; ++i) {
      const auto& seq_tokens = sequences[i];
      NIBBLE_CHECK(!seq_tokens.empty(), "sequence {} to score is empty", i);
      SequenceBatch seq;
      seq.token_offset = int64_t(batch.token_ids.size());
      seq.n_tokens = int64_t(seq_tokens.size());
      seq.n_cached = 0;
      // Blocks are handed out in order and reused by the next forward: nothing is cached
      // between forwards, so no allocation bookkeeping is needed.
      const int64_t n_blocks = (seq.n_tokens + block - 1) / block;
      for (int64_t b = 0; b < n_blocks; ++b) seq.block_table.push_back(next_block++);
      batch.token_ids.insert(batch.token_ids.end(), seq_tokens.begin(), seq_tokens.end());
      batch.seqs.push_back(std::move(seq));
    }
    model_.forward_all_logits(batch, *cache_, logits_);
    for (size_t i = next; i < end; ++i) {
      const SequenceBatch& seq = batch.seqs[i - next];
      visit(i, std::span<const float>(logits_.data() + seq.token_offset * vocab_,
                                      size_t(seq.n_tokens * vocab_)));
    }
    next = end;
  }
}

}  // namespace nibble::eval
