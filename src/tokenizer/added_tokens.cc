#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/unicode_text.h"

namespace nibble {

void AddedTokenMatcher::build(const std::vector<std::string>& patterns) {
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (size_t i = 0; i < patterns.size(); ++i) {
    const auto& pattern = patterns[i];
    if (pattern.empty()) continue;
    first_byte_[static_cast<uint8_t>(pattern[0])] = true;
    int32_t node = 0;
    for (char c : pattern) {
      auto byte = static_cast<uint8_t>(c);
      auto it = nodes_[static_cast<size_t>(node)].children.find(byte);
      if (it == nodes_[static_cast<size_t>(node)].children.end()) {
        int32_t child = static_cast<int32_t>(nodes_.size());
        nodes_[static_cast<size_t>(node)].children.emplace(byte, child);
        nodes_.push_back(Node{});
        node = child;
      } else {
        node = it->second;
      }
    }
    // The first pattern wins between identical patterns, as in aho-corasick.
    if (nodes_[static_cast<size_t>(node)].token_index < 0)
      nodes_[static_cast<size_t>(node)].token_index = static_cast<int64_t>(i);
  }
}

std::vector<AddedTokenMatcher::Match> AddedTokenMatcher::find_all(std::string_view text) const {
  std::vector<Match> matches;
  if (empty()) return matches;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t node = 0;
    int64_t best_token = -1;
    size_t best_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto& children = nodes_[static_cast<size_t>(node)].children;
      auto it = children.find(static_cast<uint8_t>(text[i]));
      if (it == children.end()) break;
      node = it->second;
      if (nodes_[static_cast<size_t>(node)].token_index >= 0) {
        best_token = nodes_[static_cast<size_t>(node)].token_index;
        best_end = i + 1;
      }
    }
    if (best_token >= 0) {
      matches.push_back({pos, best_end, static_cast<size_t>(best_token)});
      pos = best_end;
    } else {
      ++pos;
    }
  }
  return matches;
}

namespace {
char32_t last_char(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return text::next_code_point(text, start);
}
}  // namespace

void split_on_added_tokens(std::string_view text, bool at_origin, const AddedTokenMatcher& matcher,
                           const std::vector<const AddedToken*>& tokens,
                           std::vector<Segment>& out) {
  if (text.empty()) {
    out.push_back({std::nullopt, std::string(), at_origin});
    return;
  }
  size_t consumed = 0;
  auto emit_text = [&](size_t start, size_t end) {
    out.push_back(
        {std::nullopt, std::string(text.substr(start, end - start)), at_origin && start == 0});
  };
  for (const auto& match : matcher.find_all(text)) {
    const AddedToken& token = *tokens[match.token_index];
    size_t start = match.start, stop = match.end;
    if (start < consumed) continue;  // overlapped by a previous token's rstrip
    if (token.single_word) {
      bool word_before = start > 0 && text::is_word_char(last_char(text.substr(0, start)));
      bool word_after = false;
      if (stop < text.size()) {
        size_t pos = stop;
        word_after = text::is_word_char(text::next_code_point(text, pos));
      }
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        size_t char_start = new_start - 1;
        while (char_start > 0 && (static_cast<uint8_t>(text[char_start]) & 0xC0) == 0x80)
          --char_start;
        size_t pos = char_start;
        if (!text::is_whitespace(text::next_code_point(text, pos))) break;
        new_start = char_start;
      }
      start = std::max(new_start, consumed);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t pos = stop;
        if (!text::is_whitespace(text::next_code_point(text, pos))) break;
        stop = pos;
      }
    }
    if (consumed < start) emit_text(consumed, start);
    out.push_back({token.id, std::string(text.substr(start, stop - start)), false});
    consumed = stop;
  }
  if (consumed != text.size()) emit_text(consumed, text.size());
}

}  // namespace nibble
