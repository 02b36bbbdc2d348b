#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace nibble {

void SamplingParams::validate() const {
  NIBBLE_CHECK(std::isfinite(temperature) && temperature >= 0.0f,
               "temperature must be >= 0, got {}", temperature);
  NIBBLE_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got {}", top_p);
  NIBBLE_CHECK(top_k >= -1, "top_k must be -1 (disabled) or >= 1, got {}", top_k);
  NIBBLE_CHECK(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got {}", min_p);
  NIBBLE_CHECK(repetition_penalty > 0.0f && repetition_penalty <= 2.0f,
               "repetition_penalty must be in (0, 2], got {}", repetition_penalty);
  NIBBLE_CHECK(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
               "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  NIBBLE_CHECK(presence_penalty >= -2.0f && presence_penalty <= 2.0f,
               "presence_penalty must be in [-2, 2], got {}", presence_penalty);
  NIBBLE_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", max_new_tokens);
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt)
    : params_(params),
      rng_(params.seed ? *params.seed : std::random_device{}()),
      seen_tokens_(prompt.begin(), prompt.end()) {
  params_.validate();
}

void Sampler::apply_penalties(std::span<float> logits) const {
  const auto vocab = static_cast<int32_t>(logits.size());
  if (params_.repetition_penalty != 1.0f) {
    // transformers' rule: divide positive logits, multiply negative ones, once per distinct token.
    std::vector<bool> done(logits.size(), false);
    for (int32_t t : seen_tokens_) {
      if (t < 0 || t >= vocab || done[t]) continue;
      done[t] = true;
      float& l = logits[t];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    for (const auto& [t, count] : output_counts_) {
      if (t < 0 || t >= vocab) continue;
      logits[t] -= params_.frequency_penalty * float(count) + params_.presence_penalty;
    }
  }
}

int32_t Sampler::sample(std::span<float> logits) {
  NIBBLE_CHECK(!logits.empty(), "sampler: empty logits");
  apply_penalties(logits);
  int32_t chosen = 0;
  const bool greedy = params_.temperature == 0.0f || params_.top_k == 1;
  if (greedy) {
    chosen = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    // Candidates sorted by logit, cut by top-k, then softmax at temperature, top-p and min-p.
    scratch_.clear();
    scratch_.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) scratch_.emplace_back(logits[i], int32_t(i));
    size_t keep = scratch_.size();
    if (params_.top_k > 0) keep = std::min(keep, size_t(params_.top_k));
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
    if (keep < scratch_.size()) {
      std::partial_sort(scratch_.begin(), scratch_.begin() + keep, scratch_.end(), by_logit);
    } else {
      std::sort(scratch_.begin(), scratch_.end(), by_logit);
    }
    scratch_.resize(keep);
    const float max_logit = scratch_.front().first;
    double total = 0.0;
    for (auto& [l, t] : scratch_) {
      l = std::exp((l - max_logit) / params_.temperature);
      total += l;
    }
    for (auto& c : scratch_) c.first = float(c.first / total);
    if (params_.top_p < 1.0f) {
      double cumulative = 0.0;
      size_t n = 0;
      while (n < scratch_.size()) {
        cumulative += scratch_[n].first;
        ++n;
        if (cumulative >= params_.top_p) break;
      }
      scratch_.resize(n);
    }
    if (params_.min_p > 0.0f) {
      const float threshold = scratch_.front().first * params_.min_p;
      size_t n = 1;
      while (n < scratch_.size() && scratch_[n].first >= threshold) ++n;
      scratch_.resize(n);
    }
    double mass = 0.0;
    for (const auto& c : scratch_) mass += c.first;
    double u = std::uniform_real_distribution<double>(0.0, mass)(rng_);
    chosen = scratch_.back().second;
    for (const auto& [p, t] : scratch_) {
      u -= p;
      if (u <= 0.0) {
        chosen = t;
        break;
      }
    }
  }
  output_counts_[chosen]++;
  seen_tokens_.push_back(chosen);
  return chosen;
}

}  // namespace nibble
