#pragma once
// KL(base || model) per token over the perplexity windows, and the base distribution kept as
// its top-k log-probabilities plus the log of the remaining mass, so that a base model can be
// run once and compared against many quantized models.
//
// With only top-k kept, the tail is treated as one outcome: KL is computed over k + 1 outcomes
// (the k tokens, "anything else"). Merging outcomes never increases a KL divergence (log-sum
// inequality), so the stored-base KLD is a lower bound; the deficit is exactly
// p_rest * KL(p_tail / p_rest || q_tail / q_rest), i.e. the tail's own divergence weighted by
// the base's tail mass (docs/eval.md gives measured values).
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "eval/batch_scorer.h"
#include "eval/perplexity.h"
#include "eval/statistics.h"

namespace nibble::eval {

struct TopKDistribution {
  std::vector<int32_t> ids;     // most probable first
  std::vector<float> logprobs;  // matching log-probabilities
  float rest_logprob = 0.0f;    // log of the probability of all other tokens (may be -inf)
};

// From a full log-probability row.
TopKDistribution top_k_distribution(std::span<const float> logprobs, int k);

// Exact KL(p || q) in nats from two full log-probability rows.
double kl_divergence(std::span<const float> base_logprobs, std::span<const float> model_logprobs);
// The (k+1)-outcome approximation described above.
double kl_divergence(const TopKDistribution& base, std::span<const float> model_logprobs);

// One scored token of a base run.
struct BaseToken {
  int32_t target = 0;
  float nll = 0.0f;  // base -log p(target)
  TopKDistribution dist;
};

// What a base-logits file holds: enough to check that a later run scores the same tokens.
struct BaseLogits {
  int64_t vocab = 0;
  int32_t top_k = 0;
  int64_t context = 0, stride = 0, n_text_tokens = 0, n_windows = 0;
  std::vector<int64_t> positions;
  std::vector<BaseToken> tokens;
};

// Binary file "NBBASE01" (little-endian, see kl_divergence.cc), written atomically.
void save_base_logits(const std::filesystem::path& path, const BaseLogits& base);
// Checks every count against the file size before allocating; throws nibble::Error naming
// the file and field.
BaseLogits load_base_logits(const std::filesystem::path& path);

struct KldResult {
  PerplexityResult base, model;
  std::vector<double> kld;         // per scored token, in position order
  std::vector<double> window_kld;  // mean KLD of each window
  SampleSummary kld_summary;
  int64_t top1_agree = 0;
  double top1_agreement = 0.0;  // fraction of tokens whose argmax matches the base's
  bool approximate = false;     // computed against a stored top-k base
  int32_t top_k = 0;
};

struct KldOptions {
  int64_t context = 512, stride = 512, n_text_tokens = 0;
  int32_t save_top_k = 64;
  BaseLogits* save_base = nullptr;  // when set, filled with the base's top-k records
};

// Runs base and model over the same windows, group by group (a base forward, then a model
// forward of the same windows), for the exact per-token KL.
KldResult compare_models(BatchScorer& base, BatchScorer& model, std::span<const int32_t> tokens,
                         std::span<const Window> windows, const KldOptions& options);

// Against a stored base (which fixes the windows: it must match `tokens`).
KldResult compare_with_base(const BaseLogits& base, BatchScorer& model,
                            std::span<const int32_t> tokens);

// The same windows as make_windows gives for the stored run.
std::vector<Window> base_windows(const BaseLogits& base, int64_t max_windows);

}  // namespace nibble::eval
