#pragma once
// Turns one row of logits into a token id under a request's SamplingParams.
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/sampling_params.h"

namespace nibble {

class Sampler {
 public:
  // `prompt` seeds the repetition-penalty set. Without a seed, a random one is drawn.
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt);

  // Picks the next token from `logits` (modified in place) and records it as output.
  int32_t sample(std::span<float> logits);

 private:
  void apply_penalties(std::span<float> logits) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int32_t> output_counts_;
  std::vector<int32_t> seen_tokens_;  // prompt + output, deduplicated lazily
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace nibble
