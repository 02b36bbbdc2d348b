#pragma once
// The BPE model of tokenizer.json: a word -> token ids, by applying the ranked merges
// lowest-rank first (a priority queue over adjacent pairs), with byte fallback and unk.
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/json_fields.h"

namespace nibble {

struct BpeConfig {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // `vocab` maps token -> id; `merges` are (left, right) pairs, best first.
  BpeModel(std::unordered_map<std::string, int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeConfig config,
           const tokenizer_json::Context& ctx);

  // Parses a {"type": "BPE", ...} model object.
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& spec,
                                             const tokenizer_json::Context& ctx);

  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr if the id has no token
  int64_t id_limit() const { return static_cast<int64_t>(id_to_token_.size()); }
  size_t vocab_entries() const { return vocab_.size(); }
  const BpeConfig& config() const { return config_; }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  std::unordered_map<uint64_t, MergeTarget> merges_;
  BpeConfig config_;
  std::optional<int32_t> unk_id_;
  int32_t byte_fallback_ids_[256];

  // Bounded word cache: words repeat a lot in natural text. Cleared when full.
  static constexpr size_t kCacheCapacity = 20000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace nibble
