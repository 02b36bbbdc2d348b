#include "formats/model_config.h"

#include <cmath>

#include "core/error.h"

namespace nibble {
namespace {

// Bounds well above any released model: they exist so that a corrupt or hostile config cannot
// make the loader size buffers from absurd numbers.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 17;
constexpr int64_t kMaxIntermediate = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMaxPositions = int64_t{1} << 26;

void check_range(const std::string& source, const char* field, int64_t value, int64_t max) {
  if (value <= 0) fail("{}: {} must be positive, got {}", source, field, value);
  if (value > max) fail("{}: {} = {} exceeds the supported maximum {}", source, field, value, max);
}

void check_token(const std::string& source, const char* field, int64_t id, int64_t vocab) {
  if (id < 0 || id >= vocab)
    fail("{}: {} = {} is outside the vocabulary [0, {})", source, field, id, vocab);
}

}  // namespace

void validate_model_config(const ModelConfig& config, const std::string& source) {
  check_range(source, "vocab_size", config.vocab_size, kMaxVocab);
  check_range(source, "hidden_size", config.hidden_size, kMaxHidden);
  check_range(source, "intermediate_size", config.intermediate_size, kMaxIntermediate);
  check_range(source, "num_hidden_layers", config.num_hidden_layers, kMaxLayers);
  check_range(source, "num_attention_heads", config.num_attention_heads, kMaxHeads);
  check_range(source, "num_key_value_heads", config.num_key_value_heads, kMaxHeads);
  check_range(source, "head_dim", config.head_dim, kMaxHeadDim);
  check_range(source, "max_position_embeddings", config.max_position_embeddings, kMaxPositions);
  if (config.num_attention_heads % config.num_key_value_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
         config.num_attention_heads, config.num_key_value_heads);
  // Rotary embedding rotates pairs of dimensions.
  if (config.head_dim % 2 != 0) fail("{}: head_dim {} must be even", source, config.head_dim);
  if (!(config.rms_norm_eps > 0.0f && config.rms_norm_eps < 1.0f))
    fail("{}: rms_norm_eps {} must be in (0, 1)", source, config.rms_norm_eps);
  if (!(std::isfinite(config.rope_theta) && config.rope_theta > 0.0f))
    fail("{}: rope_theta {} must be a positive finite number", source, config.rope_theta);

  const RopeScaling& rs = config.rope_scaling;
  if (rs.rope_type != "default" && rs.rope_type != "linear" && rs.rope_type != "llama3")
    fail("{}: rope_scaling.rope_type '{}' is not supported (supported: default, linear, llama3)",
         source, rs.rope_type);
  if (rs.rope_type != "default" && !(std::isfinite(rs.factor) && rs.factor > 0.0f))
    fail("{}: rope_scaling.factor {} must be a positive finite number", source, rs.factor);
  if (rs.rope_type == "llama3") {
    if (!(rs.low_freq_factor > 0.0f && rs.high_freq_factor > rs.low_freq_factor &&
          std::isfinite(rs.high_freq_factor)))
      fail("{}: rope_scaling needs 0 < low_freq_factor ({}) < high_freq_factor ({})", source,
           rs.low_freq_factor, rs.high_freq_factor);
    check_range(source, "rope_scaling.original_max_position_embeddings",
                rs.original_max_position_embeddings, kMaxPositions);
  }

  if (config.bos_token_id)
    check_token(source, "bos_token_id", *config.bos_token_id, config.vocab_size);
  for (int64_t id : config.eos_token_ids)
    check_token(source, "eos_token_id", id, config.vocab_size);
  if (config.pad_token_id)
    check_token(source, "pad_token_id", *config.pad_token_id, config.vocab_size);
}

}  // namespace nibble
