#pragma once
// LAMBADA (OpenAI version) as lm-evaluation-harness's lambada_openai: the model reads the
// passage without its last word; acc = the last word's tokens are all the greedy choice,
// ppl = exp(-mean over passages of log p(" " + last word | passage)).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/batch_scorer.h"

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
  double ppl = 0.0;
  std::vector<double> logprob;
  std::vector<bool> greedy;
};

LambadaResult evaluate_lambada(BatchScorer& scorer, const Tokenizer& tokenizer,
                               const std::vector<LambadaItem>& items);

}  // namespace nibble::eval
