#include "eval/multiple_choice.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "eval/bz2_file.h"
#include "eval/statistics.h"
#include "tokenizer/tokenizer.h"

namespace nibble::eval {

int64_t utf8_length(std::string_view text) {
  int64_t n = 0;
  for (const char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace

std::vector<McItem> parse_query_choices_jsonl(const std::string& text, const std::string& source,
                                              int64_t limit) {
  std::vector<McItem> items;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (limit > 0 && int64_t(items.size()) >= limit) break;
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON: {}", source, i + 1, e.what());
    }
    NIBBLE_CHECK(row.is_object() && row.contains("query") && row["query"].is_string() &&
                     row.contains("choices") && row["choices"].is_array() && row.contains("gold") &&
                     row["gold"].is_number_integer(),
                 "{}:{}: expected {{\"query\": string, \"choices\": [strings], \"gold\": int}}",
                 source, i + 1);
    McItem item;
    item.context = row["query"].get<std::string>();
    if (!ends_with(item.context, "Answer:")) item.context += "\nAnswer:";
    for (const auto& c : row["choices"]) {
      NIBBLE_CHECK(c.is_string(), "{}:{}: choices must be strings", source, i + 1);
      item.choices.push_back(c.get<std::string>());
      item.continuations.push_back(" " + item.choices.back());
    }
    item.gold = row["gold"].get<int>();
    NIBBLE_CHECK(item.choices.size() >= 2, "{}:{}: needs at least two choices", source, i + 1);
    NIBBLE_CHECK(item.gold >= 0 && size_t(item.gold) < item.choices.size(),
                 "{}:{}: gold {} is not a choice index", source, i + 1, item.gold);
    items.push_back(std::move(item));
  }
  NIBBLE_CHECK(!items.empty(), "{}: no items", source);
  return items;
}

std::vector<McItem> parse_hellaswag_text(const std::string& text, const std::string& source,
                                         int64_t limit) {
  auto lines = split_lines(text);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  NIBBLE_CHECK(lines.size() % 6 == 0,
               "{}: {} lines is not a multiple of 6 (context, gold, four endings per task)", source,
               lines.size());
  std::vector<McItem> items;
  for (size_t t = 0; t + 6 <= lines.size(); t += 6) {
    if (limit > 0 && int64_t(items.size()) >= limit) break;
    McItem item;
    item.context = lines[t];
    const std::string& gold = lines[t + 1];
    NIBBLE_CHECK(gold.size() == 1 && gold[0] >= '0' && gold[0] <= '3',
                 "{}:{}: gold index must be 0-3, got '{}'", source, t + 2, gold);
    item.gold = gold[0] - '0';
    for (size_t e = 0; e < 4; ++e) {
      item.choices.push_back(lines[t + 2 + e]);
      item.continuations.push_back(" " + lines[t + 2 + e]);
    }
    items.push_back(std::move(item));
  }
  NIBBLE_CHECK(!items.empty(), "{}: no items", source);
  return items;
}

std::vector<McItem> load_mc_task(const std::string& task, const std::filesystem::path& data_dir,
                                 int64_t limit) {
  std::filesystem::path path;
  if (task == "arc_easy" || task == "arc_challenge" || task == "piqa") {
    path = data_dir / "eval" / (task + ".jsonl");
  } else if (task == "hellaswag") {
    path = data_dir / "eval" / "hellaswag_val_full.txt.bz2";
  } else {
    path = task;
    NIBBLE_CHECK(std::filesystem::exists(path),
                 "--task {}: not a known task (arc_easy, arc_challenge, piqa, hellaswag) nor a "
                 "file",
                 task);
  }
  NIBBLE_CHECK(std::filesystem::exists(path), "{}: not found (set --data-dir or $NIBBLE_DATA)",
               path.string());
  const std::string text = read_text_file(path);
  const std::string name = path.filename().string();
  if (name.find(".jsonl") != std::string::npos) {
    return parse_query_choices_jsonl(text, path.string(), limit);
  }
  return parse_hellaswag_text(text, path.string(), limit);
}

std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const Tokenizer& tokenizer,
                                                                  std::string context,
                                                                  std::string continuation) {
  // Trailing spaces belong to the continuation: "Answer: " + "x" would otherwise tokenize the
  // space alone, unlike the running text the model saw in training.
  const size_t kept = context.find_last_not_of(' ');
  const size_t n_spaces = kept == std::string::npos ? context.size() : context.size() - kept - 1;
  if (n_spaces > 0) {
    continuation = context.substr(context.size() - n_spaces) + continuation;
    context.resize(context.size() - n_spaces);
  }
  const std::vector<int32_t> whole = tokenizer.encode(context + continuation, false);
  std::vector<int32_t> context_ids = tokenizer.encode(context, false);
  const size_t split = std::min(context_ids.size(), whole.size());
  std::vector<int32_t> continuation_ids(whole.begin() + std::ptrdiff_t(split), whole.end());
  context_ids.assign(whole.begin(), whole.begin() + std::ptrdiff_t(split));
  return {std::move(context_ids), std::move(continuation_ids)};
}

double continuation_logprob(std::span<const float> logits, int64_t vocab,
                            std::span<const int32_t> sequence, int64_t n_continuation,
                            bool* all_greedy) {
  const int64_t n = int64_t(sequence.size());
  double sum = 0.0;
  bool greedy = true;
  for (int64_t pos = n - n_continuation; pos < n; ++pos) {
    const auto row = logits.subspan(size_t((pos - 1) * vocab), size_t(vocab));
    const int32_t target = sequence[size_t(pos)];
    sum += double(row[size_t(target)]) - log_sum_exp(row);
    if (argmax(row) != target) greedy = false;
  }
  if (all_greedy) *all_greedy = greedy;
  return sum;
}

McResult evaluate_multiple_choice(BatchScorer& scorer, const Tokenizer& tokenizer,
                                  const std::vector<McItem>& items) {
  // The harness feeds a lone prefix token when the context is empty; BOS (else EOS) here.
  const auto prefix = tokenizer.bos_id() ? tokenizer.bos_id() : tokenizer.eos_id();
  std::vector<BatchScorer::SharedPrefix> groups(items.size());
  std::vector<std::vector<size_t>> scored(items.size());  // continuation tokens per choice
  McResult result;
  result.items.resize(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const McItem& item = items[i];
    McItemResult& r = result.items[i];
    r.gold = item.gold;
    std::vector<std::vector<int32_t>> contexts, continuations;
    for (size_t c = 0; c < item.continuations.size(); ++c) {
      auto [ctx, cont] = encode_pair(tokenizer, item.context, item.continuations[c]);
      NIBBLE_CHECK(!cont.empty(), "item {} choice {}: the continuation has no tokens", i, c);
      if (ctx.empty()) {
        NIBBLE_CHECK(prefix.has_value(), "item {}: empty context and no BOS/EOS token", i);
        ctx.push_back(*prefix);
      }
      r.n_tokens.push_back(int64_t(cont.size()));
      r.n_chars.push_back(utf8_length(item.choices[c]));
      contexts.push_back(std::move(ctx));
      continuations.push_back(std::move(cont));
    }
    // A choice can merge with the context's last token, so the context tokens may differ per
    // choice: share their common prefix and run each choice's remainder with its choice.
    size_t common = contexts[0].size();
    for (const auto& ctx : contexts) {
      size_t k = 0;
      while (k < std::min(common, ctx.size()) && ctx[k] == contexts[0][k]) ++k;
      common = k;
    }
    NIBBLE_CHECK(common >= 1, "item {}: the choices share no context token", i);
    groups[i].context.assign(contexts[0].begin(), contexts[0].begin() + std::ptrdiff_t(common));
    for (size_t c = 0; c < contexts.size(); ++c) {
      std::vector<int32_t> tail(contexts[c].begin() + std::ptrdiff_t(common), contexts[c].end());
      tail.insert(tail.end(), continuations[c].begin(), continuations[c].end());
      groups[i].continuations.push_back(std::move(tail));
      scored[i].push_back(continuations[c].size());
    }
  }
  const int64_t vocab = scorer.vocab();
  std::vector<std::vector<double>> logprobs(items.size());
  for (size_t i = 0; i < items.size(); ++i) logprobs[i].resize(groups[i].continuations.size());
  scorer.run_shared_prefix(groups, [&](size_t i, size_t c, std::span<const float> logits) {
    const auto& cont = groups[i].continuations[c];
    double sum = 0.0;
    for (size_t j = cont.size() - scored[i][c]; j < cont.size(); ++j) {
      const auto row = logits.subspan(j * size_t(vocab), size_t(vocab));
      sum += double(row[size_t(cont[j])]) - log_sum_exp(row);
    }
    logprobs[i][c] = sum;
  });
  double correct = 0, correct_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    McItemResult& r = result.items[i];
    double best = -INFINITY, best_norm = -INFINITY;
    for (size_t c = 0; c < items[i].continuations.size(); ++c) {
      const double lp = logprobs[i][c];
      r.logprob.push_back(lp);
      const double norm = lp / double(std::max<int64_t>(r.n_chars[c], 1));
      // Strictly greater: the first of equal choices wins, as numpy's argmax.
      if (lp > best) best = lp, r.pick = int(c);
      if (norm > best_norm) best_norm = norm, r.pick_norm = int(c);
    }
    correct += r.pick == r.gold;
    correct_norm += r.pick_norm == r.gold;
  }
  const double n = double(items.size());
  result.n_items = int64_t(items.size());
  result.acc = correct / n;
  result.acc_norm = correct_norm / n;
  if (items.size() > 1) {
    result.acc_stderr = std::sqrt(result.acc * (1 - result.acc) / (n - 1));
    result.acc_norm_stderr = std::sqrt(result.acc_norm * (1 - result.acc_norm) / (n - 1));
  }
  return result;
}

}  // namespace nibble::eval
