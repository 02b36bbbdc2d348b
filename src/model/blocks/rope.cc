#include "model/blocks/rope.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace nibble {

std::vector<float> rope_inv_freq(const ModelConfig& config, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in float32.
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = float(2 * i) / float(head_dim);
    const float power = float(std::pow(double(config.rope_theta), double(exponent)));
    inv_freq[size_t(i)] = 1.0f / power;
  }
  const RopeScaling& s = config.rope_scaling;
  if (s.rope_type.empty() || s.rope_type == "default") return inv_freq;
  if (s.rope_type == "linear") {
    NIBBLE_CHECK(s.factor > 0, "rope_scaling.factor={} must be positive", s.factor);
    for (float& f : inv_freq) f = f / s.factor;
    return inv_freq;
  }
  if (s.rope_type == "llama3") {
    NIBBLE_CHECK(s.factor > 0 && s.high_freq_factor != s.low_freq_factor && s.low_freq_factor > 0 &&
                     s.original_max_position_embeddings > 0,
                 "rope_scaling (llama3): factor={} low_freq_factor={} high_freq_factor={} "
                 "original_max_position_embeddings={} are inconsistent",
                 s.factor, s.low_freq_factor, s.high_freq_factor,
                 s.original_max_position_embeddings);
    // Mirrors transformers' _compute_llama3_parameters in float32.
    const float old_len = float(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / s.low_freq_factor;
    const float high_freq_wavelen = old_len / s.high_freq_factor;
    const float two_pi = float(2.0 * std::numbers::pi);
    for (float& f : inv_freq) {
      const float wavelen = two_pi / f;
      const float scaled = wavelen > low_freq_wavelen ? f / s.factor : f;
      if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) {
        f = scaled;
      } else {
        const float smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0f - smooth) * scaled / s.factor + smooth * scaled;
      }
    }
    return inv_freq;
  }
  fail("rope_scaling.rope_type '{}' is not supported (default, linear, llama3)", s.rope_type);
}

void rope_cos_sin(const std::vector<float>& inv_freq, int64_t position, float* cos, float* sin) {
  const float p = float(position);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float angle = p * inv_freq[i];  // float32 product, as transformers computes it
    cos[i] = float(std::cos(double(angle)));
    sin[i] = float(std::sin(double(angle)));
  }
}

void apply_rope(float* x, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    const float ac = a * cos[i], bs = b * sin[i], bc = b * cos[i], as = a * sin[i];
    x[i] = ac - bs;
    x[i + half] = bc + as;
  }
}

}  // namespace nibble
