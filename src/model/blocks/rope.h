#pragma once
// Rotary position embedding in Hugging Face's rotate_half (NeoX) convention: dimension i pairs
// with i + head_dim/2. Frequencies follow transformers' float32 arithmetic so that cos/sin
// match its tables to the last bit or two.
#include <cstdint>
#include <vector>

#include "formats/model_config.h"

namespace nibble {

// inv_freq[i] for i < head_dim/2, with rope_scaling ("default", "linear", "llama3") applied.
// Throws nibble::Error for an unknown rope_type.
std::vector<float> rope_inv_freq(const ModelConfig& config, int64_t head_dim);

// cos/sin of position * inv_freq[i], for i < inv_freq.size().
void rope_cos_sin(const std::vector<float>& inv_freq, int64_t position, float* cos, float* sin);

// Rotates one head in place: x[i], x[i + half] by the angle whose cos/sin are cos[i], sin[i].
void apply_rope(float* x, int64_t head_dim, const float* cos, const float* sin);

}  // namespace nibble
