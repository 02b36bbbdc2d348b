#pragma once
// Added tokens (special or not) are cut out of the text before the normalizer and the model
// run, with the matching rules of `tokenizers`: leftmost-longest, single_word, lstrip, rstrip,
// and `normalized` tokens matched against the normalized text.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nibble {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A literal multi-pattern matcher (a byte trie) with leftmost-longest semantics.
class AddedTokenMatcher {
 public:
  struct Match {
    size_t start, end;
    size_t token_index;  // index into the tokens the matcher was built from
  };
  // `patterns[i]` is the text to find for token i (empty patterns are skipped).
  void build(const std::vector<std::string>& patterns);
  bool empty() const { return nodes_.size() <= 1; }
  // Non-overlapping leftmost-longest matches.
  std::vector<Match> find_all(std::string_view text) const;

 private:
  struct Node {
    std::unordered_map<uint8_t, int32_t> children;
    int64_t token_index = -1;
  };
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

// One segment of the input after added tokens are extracted: either an added token id or text.
struct Segment {
  std::optional<int32_t> token_id;
  std::string text;
  bool at_origin = false;
};

// Splits `text` at the matches of `matcher` (built over `tokens`) applying each token's
// single_word / lstrip / rstrip rules, as `tokenizers`' AddedVocabulary::find_matches does.
void split_on_added_tokens(std::string_view text, bool at_origin, const AddedTokenMatcher& matcher,
                           const std::vector<const AddedToken*>& tokens, std::vector<Segment>& out);

}  // namespace nibble
