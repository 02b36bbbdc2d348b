#include "eval/gsm8k.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "eval/bz2_file.h"

namespace nibble::eval {

std::vector<Gsm8kItem> load_gsm8k(const std::filesystem::path& path, int64_t limit) {
  NIBBLE_CHECK(std::filesystem::exists(path), "{}: not found (set --data-dir or $NIBBLE_DATA)",
               path.string());
  std::istringstream in(read_text_file(path));
  std::vector<Gsm8kItem> items;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (limit > 0 && int64_t(items.size()) >= limit) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON: {}", path.string(), n, e.what());
    }
    NIBBLE_CHECK(row.is_object() && row.contains("question") && row["question"].is_string() &&
                     row.contains("answer") && row["answer"].is_string(),
                 "{}:{}: expected {{\"question\": string, \"answer\": string}}", path.string(), n);
    items.push_back({row["question"].get<std::string>(), row["answer"].get<std::string>()});
  }
  NIBBLE_CHECK(!items.empty(), "{}: no items", path.string());
  return items;
}

std::string gsm8k_prompt(const std::vector<Gsm8kItem>& shots, const std::string& question) {
  std::string prompt;
  for (const Gsm8kItem& s : shots) {
    prompt += "Question: " + s.question + "\nAnswer: " + s.answer + "\n\n";
  }
  return prompt + "Question: " + question + "\nAnswer:";
}

std::string normalize_number(std::string number) {
  std::string out;
  for (const char c : number) {
    if (c != ',' && c != '$') out += c;
  }
  while (!out.empty() && out.back() == '.') out.pop_back();
  // "18.00" and "18" are the same answer.
  if (const size_t dot = out.find('.'); dot != std::string::npos) {
    while (!out.empty() && out.back() == '0') out.pop_back();
    if (!out.empty() && out.back() == '.') out.pop_back();
  }
  return out;
}

namespace {

bool is_number_char(char c) { return (c >= '0' && c <= '9') || c == ',' || c == '.'; }

// The first number at or after `from` ("-1,234.5"); nullopt when none.
std::optional<std::string> first_number(const std::string& text, size_t from) {
  for (size_t i = from; i < text.size(); ++i) {
    if (text[i] >= '0' && text[i] <= '9') {
      size_t start = i;
      if (start > 0 && text[start - 1] == '-') --start;
      size_t end = i;
      while (end < text.size() && is_number_char(text[end])) ++end;
      return normalize_number(text.substr(start, end - start));
    }
  }
  return std::nullopt;
}

std::optional<std::string> last_number(const std::string& text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] >= '0' && text[i] <= '9') {
      size_t start = i;
      if (start > 0 && text[start - 1] == '-') --start;
      while (i < text.size() && is_number_char(text[i])) ++i;
      std::string n = normalize_number(text.substr(start, i - start));
      if (!n.empty()) last = n;
    } else {
      ++i;
    }
  }
  return last;
}

}  // namespace

std::optional<std::string> extract_gsm8k_answer(const std::string& text) {
  if (const size_t at = text.find("####"); at != std::string::npos) {
    if (auto n = first_number(text, at + 4)) return n;
  }
  if (const size_t at = text.find("The answer is"); at != std::string::npos) {
    if (auto n = first_number(text, at + 13)) return n;
  }
  return last_number(text);
}

const std::vector<std::string>& gsm8k_stop_strings() {
  static const std::vector<std::string> stops = {"Question:", "</s>", "<|im_end|>"};
  return stops;
}

Gsm8kResult evaluate_gsm8k(const std::vector<Gsm8kItem>& shots, const std::vector<Gsm8kItem>& items,
                           GenerationBackend& backend, int64_t max_tokens) {
  Gsm8kResult r;
  r.n_items = int64_t(items.size());
  double hits = 0;
  for (const Gsm8kItem& item : items) {
    Gsm8kItemResult ir;
    ir.output = backend.generate({.prompt = gsm8k_prompt(shots, item.question),
                                  .max_tokens = max_tokens,
                                  .stop = gsm8k_stop_strings()});
    ir.expected = extract_gsm8k_answer(item.answer).value_or("");
    ir.predicted = extract_gsm8k_answer(ir.output).value_or("");
    ir.correct = !ir.expected.empty() && ir.predicted == ir.expected;
    hits += ir.correct;
    r.items.push_back(std::move(ir));
  }
  const double n = double(std::max<int64_t>(r.n_items, 1));
  r.acc = hits / n;
  r.acc_stderr = r.n_items > 1 ? std::sqrt(r.acc * (1 - r.acc) / (n - 1)) : 0.0;
  return r;
}

}  // namespace nibble::eval
