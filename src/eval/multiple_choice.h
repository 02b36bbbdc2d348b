#pragma once
// Multiple choice by log-likelihood, with lm-evaluation-harness conventions (docs/eval.md):
//   the model scores context + continuation for every choice; acc picks the choice with the
//   largest sum of continuation log-probabilities, acc_norm the largest sum divided by the
//   choice's length in characters (Unicode code points, without the leading space).
// Tokenization as the harness's _encode_pair: trailing spaces of the context move to the
// continuation, then continuation tokens = encode(context + continuation) minus the first
// len(encode(context)) tokens; no special tokens are added.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/batch_scorer.h"

namespace nibble {
class Tokenizer;
}

namespace nibble::eval {

struct McItem {
  std::string context;                     // e.g. "Question: ...\nAnswer:"
  std::vector<std::string> continuations;  // e.g. " Sunlight is ..." (with the leading space)
  std::vector<std::string> choices;        // the bare choice texts, for acc_norm lengths
  int gold = 0;
};

// arc_easy, arc_challenge, piqa (jsonl {"query","choices","gold"} in data_dir/eval/),
// hellaswag (6-line text, data_dir/eval/hellaswag_val_full.txt.bz2), or a path to a file of
// either format (.jsonl, or .txt / .txt.bz2 for the 6-line format).
std::vector<McItem> load_mc_task(const std::string& task, const std::filesystem::path& data_dir,
                                 int64_t limit);

// {"query","choices","gold"}: context = query + "\nAnswer:" unless the query already ends in
// "Answer:", continuation = " " + choice (the harness's arc_easy / piqa prompts).
std::vector<McItem> parse_query_choices_jsonl(const std::string& text, const std::string& source,
                                              int64_t limit);
// llama.cpp's HellaSwag text: per task, the context line, the gold index (0-3), four endings.
// Continuation = " " + ending, as the harness's hellaswag task.
std::vector<McItem> parse_hellaswag_text(const std::string& text, const std::string& source,
                                         int64_t limit);

struct McItemResult {
  std::vector<double> logprob;    // sum over continuation tokens, per choice
  std::vector<int64_t> n_tokens;  // continuation tokens, per choice
  std::vector<int64_t> n_chars;   // choice length in code points
  int pick = 0, pick_norm = 0, gold = 0;
};

struct McResult {
  int64_t n_items = 0;
  double acc = 0.0, acc_stderr = 0.0;
  double acc_norm = 0.0, acc_norm_stderr = 0.0;
  std::vector<McItemResult> items;
};

// The (context tokens, continuation tokens) of one choice, as the harness makes them.
std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const Tokenizer& tokenizer,
                                                                  std::string context,
                                                                  std::string continuation);

// Sum of log p(continuation[i] | context, continuation[<i]) from a sequence's logits; the
// sequence is context + continuation and logits its [length, vocab] rows.
double continuation_logprob(std::span<const float> logits, int64_t vocab,
                            std::span<const int32_t> sequence, int64_t n_continuation,
                            bool* all_greedy = nullptr);

McResult evaluate_multiple_choice(BatchScorer& scorer, const Tokenizer& tokenizer,
                                  const std::vector<McItem>& items);

int64_t utf8_length(std::string_view text);

}  // namespace nibble::eval
