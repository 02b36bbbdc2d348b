#pragma once
// Perplexity over a token stream with the sliding-window convention of the Hugging Face
// perplexity guide (docs/eval.md states it exactly):
//   windows start at 0, stride, 2*stride, ...; a window covers tokens [begin, min(begin +
//   context, n)); it scores only the tokens that no earlier window scored (the last
//   end - previous_end tokens), each predicted from the tokens before it inside the window;
//   token 0 of the stream is never scored; the walk stops at the window that reaches the end.
// With stride == context the windows do not overlap (the first token of each window is then
// scored only as context of the next, i.e. not at all: each window loses one target).
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "eval/batch_scorer.h"
#include "eval/statistics.h"

namespace nibble::eval {

struct Window {
  int64_t begin = 0;         // first token of the window (absolute position)
  int64_t end = 0;           // one past the last token
  int64_t first_scored = 0;  // first target scored in this window; > begin always
};

// max_windows <= 0 means all. Throws nibble::Error for context < 2 or stride outside
// [1, context].
std::vector<Window> make_windows(int64_t n_tokens, int64_t context, int64_t stride,
                                 int64_t max_windows);

// -log p(target) under `logits` (one vocabulary row).
double token_nll(std::span<const float> logits, int32_t target);

// Called once per scored token, in increasing position: `logits` is the row that predicts
// tokens[position] (computed from tokens [window.begin, position)).
using ScoredTokenVisitor =
    std::function<void(int64_t position, int32_t target, std::span<const float> logits)>;

// Runs the windows through the scorer, as many per ForwardBatch as its token budget allows.
void for_each_scored_token(BatchScorer& scorer, std::span<const int32_t> tokens,
                           std::span<const Window> windows, const ScoredTokenVisitor& visit);

struct PerplexityResult {
  int64_t n_tokens = 0;  // scored tokens
  int64_t n_windows = 0;
  double mean_nll = 0.0;       // nats per token
  double nll_std_error = 0.0;  // standard error of mean_nll (per-token NLL variance)
  double ppl = 0.0;            // exp(mean_nll)
  double ppl_std_error = 0.0;  // delta method: ppl * nll_std_error
  std::vector<double> nll;     // per scored token, in position order
};

PerplexityResult perplexity_from_nll(std::vector<double> nll, int64_t n_windows);

PerplexityResult perplexity(BatchScorer& scorer, std::span<const int32_t> tokens,
                            std::span<const Window> windows);

}  // namespace nibble::eval
