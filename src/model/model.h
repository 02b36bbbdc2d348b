#pragma once
// The model interface: one forward over a flat token batch (all tokens of all running
// sequences, prefill chunks and decode steps mixed) that writes the new tokens' K/V into the
// paged cache and returns logits.
#include <cstdint>
#include <memory>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/model_config.h"

namespace nibble {

class KvCache;

// One sequence's slice of the flat batch.
struct SequenceBatch {
  int64_t token_offset = 0;  // index of its first token in ForwardBatch::token_ids
  int64_t n_tokens = 0;      // new tokens in this step (prefill chunk or 1 for decode)
  int64_t n_cached = 0;      // tokens already in the KV cache; positions are n_cached + i
  std::vector<int32_t>
      block_table;           // KV blocks of this sequence, covering n_cached + n_tokens slots
  bool want_logits = false;  // logits for its last token
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;
  std::vector<SequenceBatch> seqs;
};

// Weight storage/compute precision.
enum class ComputeType { F32, BF16 };

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Writes K/V of the new tokens into the cache and returns logits [n_wanting, vocab] for the
  // last token of each sequence with want_logits, in seqs order.
  virtual void forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits) = 0;
  // Same, but returns logits [token_ids.size(), vocab] for every token of the batch, in
  // token_ids order (perplexity evaluation, parity tests); want_logits is ignored.
  virtual void forward_all_logits(const ForwardBatch& batch, KvCache& cache,
                                  std::vector<float>& logits) = 0;
  // Bytes of weights held in memory.
  virtual size_t weight_bytes() const = 0;
  // The part of weight_bytes() in the transformer blocks (what quantization shrinks).
  virtual size_t layer_weight_bytes() const = 0;
  // Bytes of weights one decode step reads: every layer and the output layer, not the
  // embedding table (a step looks up one row) unless it is also the output layer.
  virtual size_t step_weight_bytes() const { return weight_bytes(); }
};

// Builds a Llama-family model (llama, mistral, qwen2 with q/k/v bias, qwen3 with q/k RMSNorm)
// from tensors with Hugging Face names. Throws nibble::Error naming the tensor and
// checkpoint.source() when a tensor is missing or has the wrong shape.
std::unique_ptr<Model> create_llama_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                          ComputeType type);

}  // namespace nibble
