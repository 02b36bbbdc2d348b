#pragma once
// GSM8K by greedy generation, in lm-evaluation-harness's gsm8k prompt format:
//   n shots "Question: q\nAnswer: a\n\n" (the first n items of the train file), then
//   "Question: q\nAnswer:"; generation stops at "Question:" (or EOS / max tokens).
// The predicted number is the one after "####", else after "The answer is", else the last
// number of the output (flexible); commas, "$" and a trailing "." are dropped before comparing
// with the number after "####" in the reference answer.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "eval/generation_backend.h"

namespace nibble::eval {

struct Gsm8kItem {
  std::string question, answer;
};

std::vector<Gsm8kItem> load_gsm8k(const std::filesystem::path& path, int64_t limit);

std::string gsm8k_prompt(const std::vector<Gsm8kItem>& shots, const std::string& question);

// The final number of a reference answer or a model output (see above); nullopt when none.
std::optional<std::string> extract_gsm8k_answer(const std::string& text);
std::string normalize_number(std::string number);

struct Gsm8kItemResult {
  std::string output, predicted, expected;
  bool correct = false;
};

struct Gsm8kResult {
  int64_t n_items = 0;
  double acc = 0.0, acc_stderr = 0.0;
  std::vector<Gsm8kItemResult> items;
};

// The stop strings of every GSM8K request: the next few-shot question, or an end-of-turn
// marker that a server might not treat as EOS.
const std::vector<std::string>& gsm8k_stop_strings();

// Each item's greedy continuation comes from `backend` (the engine or a server).
Gsm8kResult evaluate_gsm8k(const std::vector<Gsm8kItem>& shots, const std::vector<Gsm8kItem>& items,
                           GenerationBackend& backend, int64_t max_tokens);

}  // namespace nibble::eval
