#pragma once
// GSM8K by greedy generation, in lm-evaluation-harness's gsm8k prompt format:
//   n shots "Question: q\nAnswer: a\n\n" (the first n items of the train file), then
//   "Question: q\nAnswer:"; generation stops at "Question:" (or EOS / max tokens).
// The predicted number is the one after "####", else after "The answer is", else the last
// number of the output (flexible); commas, "$" and a trailing "." are dropped before comparing
// with the number after "####" in the reference answer.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

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

// `generate(prompt)` returns the model's greedy continuation (already cut at the stop string).
Gsm8kResult evaluate_gsm8k(const std::vector<Gsm8kItem>& shots, const std::vector<Gsm8kItem>& items,
                           const std::function<std::string(const std::string&)>& generate);

}  // namespace nibble::eval
