#include "eval/lambada.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "eval/bz2_file.h"
#include "eval/multiple_choice.h"
#include "tokenizer/tokenizer.h"

namespace nibble::eval {

std::vector<LambadaItem> load_lambada(const std::filesystem::path& path, int64_t limit) {
  NIBBLE_CHECK(std::filesystem::exists(path), "{}: not found (set --data-dir or $NIBBLE_DATA)",
               path.string());
  std::istringstream in(read_text_file(path));
  std::vector<LambadaItem> items;
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
    NIBBLE_CHECK(row.is_object() && row.contains("context") && row["context"].is_string() &&
                     row.contains("continuation") && row["continuation"].is_string(),
                 "{}:{}: expected {{\"context\": string, \"continuation\": string}}", path.string(),
                 n);
    items.push_back({row["context"].get<std::string>(), row["continuation"].get<std::string>()});
  }
  NIBBLE_CHECK(!items.empty(), "{}: no items", path.string());
  return items;
}

LambadaResult evaluate_lambada(BatchScorer& scorer, const Tokenizer& tokenizer,
                               const std::vector<LambadaItem>& items) {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int64_t> n_continuation;
  for (size_t i = 0; i < items.size(); ++i) {
    auto [ctx, cont] = encode_pair(tokenizer, items[i].context, " " + items[i].continuation);
    NIBBLE_CHECK(!ctx.empty() && !cont.empty(), "LAMBADA item {}: empty context or word", i);
    n_continuation.push_back(int64_t(cont.size()));
    ctx.insert(ctx.end(), cont.begin(), cont.end());
    sequences.push_back(std::move(ctx));
  }
  LambadaResult r;
  r.n_items = int64_t(items.size());
  r.logprob.resize(items.size());
  r.greedy.resize(items.size());
  scorer.run(sequences, [&](size_t s, std::span<const float> logits) {
    bool greedy = false;
    r.logprob[s] =
        continuation_logprob(logits, scorer.vocab(), sequences[s], n_continuation[s], &greedy);
    r.greedy[s] = greedy;
  });
  double hits = 0, sum = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    hits += r.greedy[i];
    sum += r.logprob[i];
  }
  const double n = double(items.size());
  r.acc = hits / n;
  r.acc_stderr = items.size() > 1 ? std::sqrt(r.acc * (1 - r.acc) / (n - 1)) : 0.0;
  r.ppl = std::exp(-sum / n);
  return r;
}

namespace {

void finish_accuracy(LambadaResult& r) {
  double hits = 0;
  for (const bool g : r.greedy) hits += g;
  const double n = double(std::max<int64_t>(r.n_items, 1));
  r.acc = hits / n;
  r.acc_stderr = r.n_items > 1 ? std::sqrt(r.acc * (1 - r.acc) / (n - 1)) : 0.0;
}

}  // namespace

LambadaResult evaluate_lambada_by_generation(GenerationBackend& backend,
                                             const std::vector<LambadaItem>& items,
                                             int64_t max_tokens) {
  LambadaResult r;
  r.n_items = int64_t(items.size());
  for (const LambadaItem& item : items) {
    // As encode_pair: trailing spaces of the passage belong to the word.
    const size_t kept = item.context.find_last_not_of(' ');
    const size_t n_spaces =
        kept == std::string::npos ? item.context.size() : item.context.size() - kept - 1;
    const std::string context = item.context.substr(0, item.context.size() - n_spaces);
    std::string target(n_spaces + 1, ' ');
    target += item.continuation;
    std::string output =
        backend.generate({.prompt = context, .max_tokens = max_tokens, .stop = {}});
    r.greedy.push_back(output.compare(0, target.size(), target) == 0);
    r.outputs.push_back(std::move(output));
  }
  finish_accuracy(r);
  return r;
}

}  // namespace nibble::eval
