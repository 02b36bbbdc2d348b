#pragma once
// The architecture description a model is built from, filled from an HF config.json or
// from GGUF metadata. Field names follow transformers' config.json keys.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

struct RopeScaling {
  std::string rope_type = "default";  // "default", "llama3", "linear"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2", "qwen3"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections have biases (qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (qwen3)
  std::string torch_dtype = "float32";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
};

// Checks internal consistency (divisibility, positivity); throws nibble::Error naming
// `source` and the offending field.
void validate_model_config(const ModelConfig& config, const std::string& source);

}  // namespace nibble
