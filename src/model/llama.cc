#include "model/llama.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cpu/kernels.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/blocks/rope.h"
#include "model/linear_builder.h"
#include "runtime/kv_cache.h"

namespace nibble {
namespace {

using cpu::DenseMatrix;
using cpu::LinearWeight;
using cpu::WeightType;

class LlamaModel final : public Model {
 public:
  LlamaModel(const ModelConfig& config, const Checkpoint& checkpoint,
             const LinearBuildOptions& options);

  const ModelConfig& config() const override { return config_; }
  void forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits) override {
    run(batch, cache, logits, /*all_logits=*/false);
  }
  void forward_all_logits(const ForwardBatch& batch, KvCache& cache,
                          std::vector<float>& logits) override {
    run(batch, cache, logits, /*all_logits=*/true);
  }
  size_t weight_bytes() const override;
  size_t layer_weight_bytes() const override;
  size_t step_weight_bytes() const override;

 private:
  struct Layer {
    std::unique_ptr<LinearWeight> qkv;  // rows: q heads, then k heads, then v heads
    std::vector<float> qkv_bias;
    std::unique_ptr<LinearWeight> o;
    std::unique_ptr<LinearWeight> gate_up;  // rows: gate, then up
    std::unique_ptr<LinearWeight> down;
    std::vector<float> attn_norm, mlp_norm, q_norm, k_norm;
  };

  void validate(const ForwardBatch& batch, const KvCache& cache);
  void run(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits, bool all_logits);
  void attention_block(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                       KvCache& cache);

  ModelConfig config_;
  int64_t hidden_, head_dim_, n_heads_, n_kv_heads_, intermediate_, vocab_;
  DenseMatrix embed_;
  std::unique_ptr<LinearWeight> lm_head_;  // null when tied to embed_
  bool embed_from_head_ = false;           // embedding rows come from lm_head_ (GGUF, tied)
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;

  // Per-forward scratch, reused across calls to avoid allocation in the decode loop.
  std::vector<int32_t> token_seq_;
  std::vector<int64_t> positions_;
  std::vector<float> cos_, sin_;
  std::vector<float> x_, h_, qkv_, attn_out_, proj_, gate_up_, act_, final_rows_;
};

LlamaModel::LlamaModel(const ModelConfig& config, const Checkpoint& checkpoint,
                       const LinearBuildOptions& options)
    : config_(config) {
  hidden_ = config.hidden_size;
  n_heads_ = config.num_attention_heads;
  n_kv_heads_ = config.num_key_value_heads > 0 ? config.num_key_value_heads : n_heads_;
  head_dim_ = config.head_dim > 0 ? config.head_dim : (n_heads_ > 0 ? hidden_ / n_heads_ : 0);
  intermediate_ = config.intermediate_size;
  vocab_ = config.vocab_size;
  const std::string& src = checkpoint.source();
  NIBBLE_CHECK(hidden_ > 0 && n_heads_ > 0 && head_dim_ > 0 && intermediate_ > 0 && vocab_ > 0 &&
                   config.num_hidden_layers > 0,
               "{}: config needs positive hidden_size, num_attention_heads, head_dim, "
               "intermediate_size, vocab_size and num_hidden_layers",
               src);
  NIBBLE_CHECK(n_heads_ % n_kv_heads_ == 0,
               "{}: num_attention_heads={} is not a multiple of num_key_value_heads={}", src,
               n_heads_, n_kv_heads_);
  NIBBLE_CHECK(head_dim_ % 2 == 0, "{}: head_dim={} must be even for RoPE", src, head_dim_);
  config_.head_dim = head_dim_;
  config_.num_key_value_heads = n_kv_heads_;

  const WeightType wt = options.compute == ComputeType::BF16 ? WeightType::BF16 : WeightType::F32;
  const auto load = [&](const std::string& name, const std::vector<int64_t>& shape) {
    return load_checked(checkpoint, name, shape);
  };
  const auto linear = [&](const std::vector<std::string>& names, const std::vector<int64_t>& rows,
                          int64_t cols) {
    return build_linear(checkpoint, names, rows, cols, options);
  };
  embed_ = DenseMatrix(wt, vocab_, hidden_, load("model.embed_tokens.weight", {vocab_, hidden_}));
  // Some tied checkpoints still store lm_head.weight: the config decides. Online methods leave
  // lm_head in the compute dtype, as SGLang does, unless quantize_lm_head asks otherwise (a
  // tied model then gets a quantized copy of the embedding as its output layer).
  if (!config.tie_word_embeddings || options.quantize_lm_head) {
    LinearBuildOptions head_options = options;
    if (!options.quantize_lm_head) head_options.online = nullptr;
    const std::string head =
        config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    lm_head_ = build_linear(checkpoint, {head}, {vocab_}, hidden_, head_options);
    // A tied copy that the method left dense (a shape it does not take, a GGUF embedding in
    // F16) would only duplicate the embedding: the embedding stays the output layer.
    if (config.tie_word_embeddings && lm_head_->nbytes() >= embed_.nbytes()) {
      spdlog::warn("{}: --quantize-lm-head: the tied output layer stays unquantized ({})", src,
                   lm_head_->describe());
      lm_head_.reset();
    }
    // Without an online method a smaller tied head holds the GGUF file's own blocks: its rows
    // are the embedding's rows (the same dequantization), so lookups read the head and the
    // dense table is dropped. An online copy is not the embedding: the table stays.
    std::vector<float> probe(static_cast<size_t>(hidden_));
    if (config.tie_word_embeddings && lm_head_ && !options.online &&
        lm_head_->weight_row(0, probe.data())) {
      embed_ = DenseMatrix();
      embed_from_head_ = true;
    }
  }
  final_norm_ = load("model.norm.weight", {hidden_});

  const int64_t q_rows = n_heads_ * head_dim_, kv_rows = n_kv_heads_ * head_dim_;
  layers_.resize(size_t(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    Layer& layer = layers_[size_t(i)];
    const std::string p = fmt::format("model.layers.{}.", i);
    const std::string a = p + "self_attn.";
    layer.qkv = linear({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"},
                       {q_rows, kv_rows, kv_rows}, hidden_);
    if (config.attention_bias) {
      for (auto [name, rows] : {std::pair{"q_proj.bias", q_rows}, std::pair{"k_proj.bias", kv_rows},
                                std::pair{"v_proj.bias", kv_rows}}) {
        std::vector<float> b = load(a + name, {rows});
        layer.qkv_bias.insert(layer.qkv_bias.end(), b.begin(), b.end());
      }
    }
    if (config.qk_norm) {
      layer.q_norm = load(a + "q_norm.weight", {head_dim_});
      layer.k_norm = load(a + "k_norm.weight", {head_dim_});
    }
    layer.o = linear({a + "o_proj.weight"}, {hidden_}, q_rows);
    layer.gate_up = linear({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"},
                           {intermediate_, intermediate_}, hidden_);
    layer.down = linear({p + "mlp.down_proj.weight"}, {hidden_}, intermediate_);
    layer.attn_norm = load(p + "input_layernorm.weight", {hidden_});
    layer.mlp_norm = load(p + "post_attention_layernorm.weight", {hidden_});
  }
  inv_freq_ = rope_inv_freq(config_, head_dim_);
}

size_t LlamaModel::weight_bytes() const {
  return embed_.nbytes() + (lm_head_ ? lm_head_->nbytes() : 0) + final_norm_.size() * 4 +
         layer_weight_bytes();
}

size_t LlamaModel::step_weight_bytes() const {
  return (lm_head_ ? lm_head_->nbytes() : embed_.nbytes()) + final_norm_.size() * 4 +
         layer_weight_bytes();
}

size_t LlamaModel::layer_weight_bytes() const {
  size_t bytes = 0;
  for (const Layer& l : layers_) {
    bytes += l.qkv->nbytes() + l.o->nbytes() + l.gate_up->nbytes() + l.down->nbytes();
    bytes += (l.qkv_bias.size() + l.attn_norm.size() + l.mlp_norm.size() + l.q_norm.size() +
              l.k_norm.size()) *
             4;
  }
  return bytes;
}

void LlamaModel::validate(const ForwardBatch& batch, const KvCache& cache) {
  NIBBLE_CHECK(
      cache.n_layers() == int64_t(layers_.size()) && cache.n_kv_heads() == n_kv_heads_ &&
          cache.head_dim() == head_dim_,
      "forward: KV cache has {} layers, {} kv heads, head_dim {}; the model needs {}, {}, {}",
      cache.n_layers(), cache.n_kv_heads(), cache.head_dim(), layers_.size(), n_kv_heads_,
      head_dim_);
  const int64_t n_tokens = int64_t(batch.token_ids.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int32_t id = batch.token_ids[size_t(t)];
    NIBBLE_CHECK(id >= 0 && id < vocab_, "forward: token id {} at index {} is outside [0, {})", id,
                 t, vocab_);
  }
  token_seq_.assign(size_t(n_tokens), -1);
  positions_.assign(size_t(n_tokens), 0);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceBatch& seq = batch.seqs[s];
    NIBBLE_CHECK(
        seq.n_tokens > 0 && seq.token_offset >= 0 && seq.n_cached >= 0 &&
            seq.token_offset + seq.n_tokens <= n_tokens,
        "forward: sequence {} (token_offset {}, n_tokens {}, n_cached {}) does not fit the "
        "batch of {} tokens",
        s, seq.token_offset, seq.n_tokens, seq.n_cached, n_tokens);
    const int64_t needed = seq.n_cached + seq.n_tokens;
    NIBBLE_CHECK(int64_t(seq.block_table.size()) * cache.block_size() >= needed,
                 "forward: sequence {} has {} KV blocks of {} slots for {} tokens", s,
                 seq.block_table.size(), cache.block_size(), needed);
    for (int32_t block : seq.block_table) {
      NIBBLE_CHECK(block >= 0 && block < cache.n_blocks(),
                   "forward: sequence {} block {} is outside the cache's {} blocks", s, block,
                   cache.n_blocks());
    }
    for (int64_t i = 0; i < seq.n_tokens; ++i) {
      const size_t t = size_t(seq.token_offset + i);
      NIBBLE_CHECK(token_seq_[t] < 0, "forward: token {} belongs to two sequences", t);
      token_seq_[t] = int32_t(s);
      positions_[t] = seq.n_cached + i;
    }
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    NIBBLE_CHECK(token_seq_[size_t(t)] >= 0, "forward: token {} belongs to no sequence", t);
  }
}

void LlamaModel::attention_block(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                                 KvCache& cache) {
  const int64_t n_tokens = int64_t(batch.token_ids.size());
  const int64_t qkv_width = (n_heads_ + 2 * n_kv_heads_) * head_dim_;
  const int64_t half = head_dim_ / 2;
  const float eps = config_.rms_norm_eps;
  const auto& kt = cpu::kernels();
  // q/k norm, RoPE, and K/V into the cache, token by token.
  ThreadPool::global().parallel_for(n_tokens, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* row = qkv_.data() + t * qkv_width;
      const float* cos = cos_.data() + t * half;
      const float* sin = sin_.data() + t * half;
      for (int64_t h = 0; h < n_heads_ + n_kv_heads_; ++h) {
        float* head = row + h * head_dim_;
        if (config_.qk_norm) {
          kt.rmsnorm(head, h < n_heads_ ? layer.q_norm.data() : layer.k_norm.data(), head_dim_, eps,
                     head);
        }
        apply_rope(head, head_dim_, cos, sin);
      }
      const SequenceBatch& seq = batch.seqs[size_t(token_seq_[size_t(t)])];
      const int64_t pos = positions_[size_t(t)];
      const int64_t slot_offset =
          seq.block_table[size_t(pos / cache.block_size())] * cache.block_stride() +
          (pos % cache.block_size()) * head_dim_;
      for (int64_t h = 0; h < n_kv_heads_; ++h) {
        cache.store(layer_index, h, slot_offset, row + (n_heads_ + h) * head_dim_,
                    row + (n_heads_ + n_kv_heads_ + h) * head_dim_);
      }
    }
  });

  // Each (token, head) attends over its sequence's positions 0..pos (causal).
  const int64_t group = n_heads_ / n_kv_heads_;
  const float scale = 1.0f / std::sqrt(float(head_dim_));
  int64_t max_ctx = 0;
  for (int64_t p : positions_) max_ctx = std::max(max_ctx, p + 1);
  const bool f32_cache = cache.dtype() == KvDType::F32;
  ThreadPool::global().parallel_for(n_tokens * n_heads_, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_ctx));
    // A narrow cache is widened to f32 rows first: the one attention kernel then serves all
    // dtypes, and the conversion is linear in context, like the attention itself.
    std::vector<float> wide_keys, wide_values;
    const int32_t single_block = 0;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t t = u / n_heads_, h = u % n_heads_, kv_head = h / group;
      const SequenceBatch& seq = batch.seqs[size_t(token_seq_[size_t(t)])];
      cpu::AttentionArgs args;
      args.q = qkv_.data() + t * qkv_width + h * head_dim_;
      if (f32_cache) {
        args.keys = cache.keys(layer_index, kv_head);
        args.values = cache.values(layer_index, kv_head);
        args.block_stride = cache.block_stride();
        args.block_table = seq.block_table.data();
        args.block_size = cache.block_size();
      } else {
        const int64_t n_ctx = positions_[size_t(t)] + 1;
        wide_keys.resize(size_t(n_ctx * head_dim_));
        wide_values.resize(wide_keys.size());
        for (int64_t p = 0; p < n_ctx; p += cache.block_size()) {
          const int64_t count = std::min(cache.block_size(), n_ctx - p);
          const int64_t block = seq.block_table[size_t(p / cache.block_size())];
          cache.load(layer_index, kv_head, block * cache.block_stride(), count,
                     wide_keys.data() + p * head_dim_, wide_values.data() + p * head_dim_);
        }
        args.keys = wide_keys.data();
        args.values = wide_values.data();
        args.block_stride = 0;
        args.block_table = &single_block;
        args.block_size = n_ctx;
      }
      args.n_ctx = positions_[size_t(t)] + 1;
      args.head_dim = head_dim_;
      args.scale = scale;
      args.scores = scores.data();
      args.out = attn_out_.data() + t * n_heads_ * head_dim_ + h * head_dim_;
      kt.attention(args);
    }
  });
}

void LlamaModel::run(const ForwardBatch& batch, KvCache& cache, std::vector<float>& logits,
                     bool all_logits) {
  validate(batch, cache);
  const int64_t n_tokens = int64_t(batch.token_ids.size());
  const int64_t half = head_dim_ / 2;
  const int64_t qkv_width = (n_heads_ + 2 * n_kv_heads_) * head_dim_;
  const float eps = config_.rms_norm_eps;

  x_.resize(size_t(n_tokens * hidden_));
  h_.resize(x_.size());
  proj_.resize(x_.size());
  qkv_.resize(size_t(n_tokens * qkv_width));
  attn_out_.resize(size_t(n_tokens * n_heads_ * head_dim_));
  gate_up_.resize(size_t(n_tokens * 2 * intermediate_));
  act_.resize(size_t(n_tokens * intermediate_));
  cos_.resize(size_t(n_tokens * half));
  sin_.resize(cos_.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int32_t token = batch.token_ids[size_t(t)];
    if (embed_from_head_) {
      lm_head_->weight_row(token, x_.data() + t * hidden_);
    } else {
      embed_.row_f32(token, x_.data() + t * hidden_);
    }
    rope_cos_sin(inv_freq_, positions_[size_t(t)], cos_.data() + t * half, sin_.data() + t * half);
  }

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    cpu::rmsnorm_rows(x_.data(), layer.attn_norm.data(), n_tokens, hidden_, eps, h_.data());
    layer.qkv->forward(h_.data(), n_tokens,
                       layer.qkv_bias.empty() ? nullptr : layer.qkv_bias.data(), qkv_.data());
    attention_block(layer, int64_t(l), batch, cache);
    layer.o->forward(attn_out_.data(), n_tokens, nullptr, proj_.data());
    cpu::add_inplace(x_.data(), proj_.data(), n_tokens * hidden_);

    cpu::rmsnorm_rows(x_.data(), layer.mlp_norm.data(), n_tokens, hidden_, eps, h_.data());
    layer.gate_up->forward(h_.data(), n_tokens, nullptr, gate_up_.data());
    cpu::silu_mul_rows(gate_up_.data(), n_tokens, intermediate_, act_.data());
    layer.down->forward(act_.data(), n_tokens, nullptr, proj_.data());
    cpu::add_inplace(x_.data(), proj_.data(), n_tokens * hidden_);
  }

  // Only the rows that need logits go through the final norm and lm_head.
  std::vector<int64_t> rows;
  if (all_logits) {
    rows.resize(size_t(n_tokens));
    for (int64_t t = 0; t < n_tokens; ++t) rows[size_t(t)] = t;
  } else {
    for (const SequenceBatch& seq : batch.seqs) {
      if (seq.want_logits) rows.push_back(seq.token_offset + seq.n_tokens - 1);
    }
  }
  const int64_t n_rows = int64_t(rows.size());
  logits.resize(size_t(n_rows * vocab_));
  if (n_rows == 0) return;
  final_rows_.resize(size_t(n_rows * hidden_));
  for (int64_t r = 0; r < n_rows; ++r) {
    std::copy_n(x_.data() + rows[size_t(r)] * hidden_, hidden_, h_.data() + r * hidden_);
  }
  cpu::rmsnorm_rows(h_.data(), final_norm_.data(), n_rows, hidden_, eps, final_rows_.data());
  if (lm_head_) {
    lm_head_->forward(final_rows_.data(), n_rows, nullptr, logits.data());
  } else {
    cpu::linear(embed_, nullptr, final_rows_.data(), n_rows, logits.data());
  }
}

}  // namespace

std::unique_ptr<Model> create_llama_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                          const LinearBuildOptions& options) {
  return std::make_unique<LlamaModel>(config, checkpoint, options);
}

std::unique_ptr<Model> create_llama_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                          ComputeType type) {
  LinearBuildOptions options;
  options.compute = type;
  return create_llama_model(config, checkpoint, options);
}

}  // namespace nibble
