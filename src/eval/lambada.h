#pragma once
// LAMBADA (OpenAI version) as lm-evaluation-harness's lambada_openai: the model reads the
// passage without its last word; acc = the last word's tokens are all the greedy choice,
// ppl = exp(-mean over passages of log p(" " + last word | passage)).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/batch_scorer.h"
#include "eval/generation_backend.h"

namespace nibble {
class Tokenizer;
}

namespace nibble::eval {

struct LambadaItem {
  std::string context, continuation;  // continuation without the leading space
};

// jsonl {"context","continuation"}.
std::vector<LambadaItem> load_lambada(const std::filesystem::path& path, int64_t limit);

struct LambadaResult {
  int64_t n_items = 0;
  double acc = 0.0, acc_stderr = 0.0;
  double ppl = 0.0;  // 0 when scored by generation (no log-probabilities)
  std::vector<double> logprob;
  std::vector<bool> greedy;
  std::vector<std::string> outputs;  // by generation only
};

LambadaResult evaluate_lambada(BatchScorer& scorer, const Tokenizer& tokenizer,
                               const std::vector<LambadaItem>& items);

// Without log-probabilities (a server's /v1/completions): an item is right when the greedy
// continuation of the passage starts with " " + the last word. That is the same test as
// the log-likelihood acc above (every token of " word" is the argmax) whenever the model's
// greedy tokens spell the word the way the tokenizer splits it, which is all but rare cases.
// `max_tokens` must cover the longest word's tokens.
LambadaResult evaluate_lambada_by_generation(GenerationBackend& backend,
                                             const std::vector<LambadaItem>& items,
                                             int64_t max_tokens);

}  // namespace nibble::eval
