#include "tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <queue>

#include "tokenizer/unicode_text.h"

namespace nibble {

using tokenizer_json::Context;

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeConfig config,
                   const Context& ctx)
    : vocab_(std::move(vocab)), config_(std::move(config)) {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab_) max_id = std::max(max_id, id);
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  id_present_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[static_cast<size_t>(id)] = token;
    id_present_[static_cast<size_t>(id)] = true;
  }
  if (config_.unk_token) {
    auto it = vocab_.find(*config_.unk_token);
    if (it == vocab_.end())
      ctx.child("unk_token")
          .error(fmt::format("unk token '{}' is not in the vocab", *config_.unk_token));
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_fallback_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  size_t prefix_length = config_.continuing_subword_prefix.size();
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto left_it = vocab_.find(left);
    auto right_it = vocab_.find(right);
    auto entry_ctx = ctx.child("merges").index(rank);
    if (left_it == vocab_.end())
      entry_ctx.error(fmt::format("merge token '{}' is not in the vocab", left));
    if (right_it == vocab_.end())
      entry_ctx.error(fmt::format("merge token '{}' is not in the vocab", right));
    // With a continuing-subword prefix, the right part's prefix is dropped in the merged token.
    std::string merged =
        left + (right.size() >= prefix_length && prefix_length > 0 &&
                        right.compare(0, prefix_length, config_.continuing_subword_prefix) == 0
                    ? right.substr(prefix_length)
                    : right);
    auto merged_it = vocab_.find(merged);
    if (merged_it == vocab_.end())
      entry_ctx.error(fmt::format("merged token '{}' is not in the vocab", merged));
    // A repeated pair keeps its last rank, as `tokenizers` (a HashMap collect) does.
    merges_[pair_key(left_it->second, right_it->second)] = {static_cast<int32_t>(rank),
                                                            merged_it->second};
  }
}

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& spec, const Context& ctx) {
  const auto& vocab_json = tokenizer_json::require(spec, "vocab", ctx);
  auto vocab_ctx = ctx.child("vocab");
  if (!vocab_json.is_object()) vocab_ctx.error("expected an object of token: id");
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items()) {
    auto entry_ctx = vocab_ctx.child(token);
    vocab[token] = tokenizer_json::check_token_id(id, entry_ctx);
  }

  std::vector<std::pair<std::string, std::string>> merges;
  auto merges_it = spec.find("merges");
  if (merges_it != spec.end() && !merges_it->is_null()) {
    if (!merges_it->is_array()) ctx.child("merges").error("expected an array");
    merges.reserve(merges_it->size());
    for (size_t i = 0; i < merges_it->size(); ++i) {
      const auto& entry = (*merges_it)[i];
      auto entry_ctx = ctx.child("merges").index(i);
      if (entry.is_string()) {
        // The legacy "left right" form: split at the first space.
        const auto& text = entry.get_ref<const std::string&>();
        size_t space = text.find(' ');
        if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
          entry_ctx.error(fmt::format("expected \"left right\" (one space), got \"{}\"", text));
        merges.emplace_back(text.substr(0, space), text.substr(space + 1));
      } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
                 entry[1].is_string()) {
        merges.emplace_back(entry[0].get<std::string>(), entry[1].get<std::string>());
      } else {
        entry_ctx.error("expected \"left right\" or [left, right]");
      }
    }
  }

  BpeConfig config;
  auto unk = spec.find("unk_token");
  if (unk != spec.end() && !unk->is_null()) {
    if (!unk->is_string()) ctx.child("unk_token").error("expected a string or null");
    config.unk_token = unk->get<std::string>();
  }
  config.continuing_subword_prefix =
      tokenizer_json::get_string_or(spec, "continuing_subword_prefix", "", ctx);
  config.end_of_word_suffix = tokenizer_json::get_string_or(spec, "end_of_word_suffix", "", ctx);
  config.fuse_unk = tokenizer_json::get_bool_or(spec, "fuse_unk", false, ctx);
  config.byte_fallback = tokenizer_json::get_bool_or(spec, "byte_fallback", false, ctx);
  config.ignore_merges = tokenizer_json::get_bool_or(spec, "ignore_merges", false, ctx);
  auto dropout = spec.find("dropout");
  if (dropout != spec.end() && !dropout->is_null() && dropout->is_number() &&
      dropout->get<double>() != 0.0)
    ctx.child("dropout").error("BPE dropout is not supported (it makes encoding random)");
  return std::make_unique<BpeModel>(std::move(vocab), merges, std::move(config), ctx);
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() ||
      !id_present_[static_cast<size_t>(id)])
    return nullptr;
  return &id_to_token_[static_cast<size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  std::string key(word);
  if (config_.ignore_merges) {
    auto it = vocab_.find(key);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.emplace(std::move(key), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add_symbol = [&](int32_t id) {
    int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, false});
    if (index > 0) symbols[static_cast<size_t>(index - 1)].next = index;
  };

  // 1. One symbol per character (or per byte with byte fallback, or unk).
  int32_t pending_unk = -1;  // an unk symbol not yet added (fuse_unk may extend it)
  size_t pos = 0;
  std::string piece;
  while (pos < word.size()) {
    size_t start = pos;
    text::next_code_point(word, pos);
    piece.clear();
    if (start > 0) piece += config_.continuing_subword_prefix;
    piece.append(word.substr(start, pos - start));
    if (pos == word.size()) piece += config_.end_of_word_suffix;
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      if (pending_unk >= 0) {
        add_symbol(pending_unk);
        pending_unk = -1;
      }
      add_symbol(it->second);
      continue;
    }
    if (config_.byte_fallback) {
      bool all_bytes = true;
      for (char c : piece)
        all_bytes = all_bytes && byte_fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        // `tokenizers` does not flush a pending unk here; keep its order.
        for (char c : piece) add_symbol(byte_fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !config_.fuse_unk) add_symbol(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add_symbol(pending_unk);

  // 2. Merge the best-ranked adjacent pair until none is left; ties go to the leftmost.
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t left_pos) {
    const auto& left = symbols[static_cast<size_t>(left_pos)];
    if (left.next < 0) return;
    auto it = merges_.find(pair_key(left.id, symbols[static_cast<size_t>(left.next)].id));
    if (it != merges_.end()) queue.push({it->second.rank, left_pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    auto& left = symbols[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) continue;
    auto& right = symbols[static_cast<size_t>(left.next)];
    // Skip stale entries: the pair at this position changed since it was queued.
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const auto& symbol : symbols)
    if (!symbol.removed) out.push_back(symbol.id);
}

}  // namespace nibble
