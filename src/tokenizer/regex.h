#pragma once
// A compiled PCRE2 pattern (UTF + UCP) matching like the Oniguruma regexes of `tokenizers`.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nibble {

class Regex {
 public:
  // `what` names the pattern's origin for error messages.
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches [start, end) in valid UTF-8 text; an empty match right after the
  // previous match is skipped, as the onig crate's find_iter does.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble
