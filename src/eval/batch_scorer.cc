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
                                     needed, options_.kv.dtype);
  options_.kv.apply(*cache_);
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

void BatchScorer::run_shared_prefix(const std::vector<SharedPrefix>& items,
                                    const ContinuationVisitor& visit) {
  const int64_t block = options_.kv_block_size;
  size_t next = 0;
  while (next < items.size()) {
    size_t end = next;
    int64_t tokens = 0;
    size_t n_sequences = 0;
    while (end < items.size()) {
      int64_t n = int64_t(items[end].context.size());
      for (const auto& c : items[end].continuations) n += int64_t(c.size());
      if (end > next && tokens + n > options_.max_batch_tokens) break;
      tokens += n;
      n_sequences += 1 + items[end].continuations.size();
      ++end;
    }
    ensure_cache(tokens + int64_t(n_sequences) * block, n_sequences);
    int32_t next_block = 0;
    // Phase 1: the whole blocks of each context except its last token (which must run with
    // the continuations, as its logits predict their first token). Only whole blocks can be
    // shared: a partly filled block would be written by every continuation.
    ForwardBatch prefix_batch;
    std::vector<std::vector<int32_t>> prefix_blocks(end - next);
    std::vector<int64_t> cached(end - next);
    for (size_t i = next; i < end; ++i) {
      const auto& ctx = items[i].context;
      NIBBLE_CHECK(!ctx.empty(), "item {}: empty context", i);
      const int64_t shared = (int64_t(ctx.size()) - 1) / block * block;
      cached[i - next] = shared;
      if (shared == 0) continue;
      SequenceBatch seq;
      seq.token_offset = int64_t(prefix_batch.token_ids.size());
      seq.n_tokens = shared;
      for (int64_t b = 0; b < shared / block; ++b) seq.block_table.push_back(next_block++);
      prefix_blocks[i - next] = seq.block_table;
      prefix_batch.token_ids.insert(prefix_batch.token_ids.end(), ctx.begin(),
                                    ctx.begin() + shared);
      prefix_batch.seqs.push_back(std::move(seq));
    }
    if (!prefix_batch.seqs.empty()) model_.forward(prefix_batch, *cache_, logits_);
    // Phase 2: every continuation, preceded by the unshared tail of its context.
    ForwardBatch batch;
    std::vector<std::pair<size_t, size_t>> owner;
    for (size_t i = next; i < end; ++i) {
      const auto& ctx = items[i].context;
      const int64_t shared = cached[i - next];
      for (size_t c = 0; c < items[i].continuations.size(); ++c) {
        const auto& cont = items[i].continuations[c];
        NIBBLE_CHECK(!cont.empty(), "item {} choice {}: empty continuation", i, c);
        SequenceBatch seq;
        seq.token_offset = int64_t(batch.token_ids.size());
        seq.n_cached = shared;
        // The last continuation token is only a target: it predicts nothing we need.
        batch.token_ids.insert(batch.token_ids.end(), ctx.begin() + shared, ctx.end());
        batch.token_ids.insert(batch.token_ids.end(), cont.begin(), cont.end() - 1);
        seq.n_tokens = int64_t(batch.token_ids.size()) - seq.token_offset;
        seq.block_table = prefix_blocks[i - next];
        const int64_t total = shared + seq.n_tokens;
        while (int64_t(seq.block_table.size()) * block < total) {
          seq.block_table.push_back(next_block++);
        }
        batch.seqs.push_back(std::move(seq));
        owner.emplace_back(i, c);
      }
    }
    NIBBLE_CHECK(next_block <= cache_->n_blocks(), "internal: KV blocks exhausted ({} > {})",
                 next_block, cache_->n_blocks());
    model_.forward_all_logits(batch, *cache_, logits_);
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const auto [i, c] = owner[s];
      const SequenceBatch& seq = batch.seqs[s];
      const int64_t n_cont = int64_t(items[i].continuations[c].size());
      // Rows of the unshared context tail before the one predicting continuation[0].
      const int64_t first_row =
          seq.token_offset + (int64_t(items[i].context.size()) - 1 - seq.n_cached);
      visit(i, c,
            std::span<const float>(logits_.data() + first_row * vocab_, size_t(n_cont * vocab_)));
    }
    next = end;
  }
}

}  // namespace nibble::eval
