#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace nibble::eval {

std::vector<Window> make_windows(int64_t n_tokens, int64_t context, int64_t stride,
                                 int64_t max_windows) {
  NIBBLE_CHECK(context >= 2, "--context must be at least 2 tokens, got {}", context);
  NIBBLE_CHECK(stride >= 1 && stride <= context,
               "--stride must be between 1 and --context ({}), got {}", context, stride);
  NIBBLE_CHECK(n_tokens >= 2, "the text has {} tokens; perplexity needs at least 2", n_tokens);
  std::vector<Window> windows;
  int64_t previous_end = 0;
  for (int64_t begin = 0; begin < n_tokens; begin += stride) {
    if (max_windows > 0 && int64_t(windows.size()) >= max_windows) break;
    Window w;
    w.begin = begin;
    w.end = std::min(begin + context, n_tokens);
    // Targets not scored by an earlier window; the window's own first token has no context.
    w.first_scored = std::max(begin + 1, previous_end);
    if (w.first_scored < w.end) windows.push_back(w);
    previous_end = w.end;
    if (w.end == n_tokens) break;
  }
  return windows;
}

double token_nll(std::span<const float> logits, int32_t target) {
  return log_sum_exp(logits) - double(logits[size_t(target)]);
}

void for_each_scored_token(BatchScorer& scorer, std::span<const int32_t> tokens,
                           std::span<const Window> windows, const ScoredTokenVisitor& visit) {
  std::vector<std::vector<int32_t>> sequences;
  sequences.reserve(windows.size());
  for (const Window& w : windows) {
    sequences.emplace_back(tokens.begin() + w.begin, tokens.begin() + w.end);
  }
  const int64_t vocab = scorer.vocab();
  scorer.run(sequences, [&](size_t index, std::span<const float> logits) {
    const Window& w = windows[index];
    for (int64_t pos = w.first_scored; pos < w.end; ++pos) {
      // Row (pos - 1 - begin) of the window predicts token pos.
      const int64_t row = pos - 1 - w.begin;
      visit(pos, tokens[size_t(pos)], logits.subspan(size_t(row * vocab), size_t(vocab)));
    }
  });
}

PerplexityResult perplexity_from_nll(std::vector<double> nll, int64_t n_windows) {
  PerplexityResult r;
  r.n_windows = n_windows;
  r.n_tokens = int64_t(nll.size());
  const SampleSummary s = summarize(nll);
  r.mean_nll = s.mean;
  r.nll_std_error = s.std_error;
  r.ppl = std::exp(s.mean);
  r.ppl_std_error = r.ppl * s.std_error;
  r.nll = std::move(nll);
  return r;
}

PerplexityResult perplexity(BatchScorer& scorer, std::span<const int32_t> tokens,
                            std::span<const Window> windows) {
  std::vector<double> nll;
  for_each_scored_token(scorer, tokens, windows,
                        [&](int64_t, int32_t target, std::span<const float> logits) {
                          nll.push_back(token_nll(logits, target));
                        });
  return perplexity_from_nll(std::move(nll), int64_t(windows.size()));
}

}  // namespace nibble::eval
