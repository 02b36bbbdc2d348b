#pragma once
// A regular expression over module paths, from a model's config or a recipe (GPTQModel's
// `dynamic` rules, compressed-tensors' "re:" targets, --ignore). Matching uses PCRE2 with a
// match limit: std::regex backtracks without bound, and a pattern such as ".**x" in a
// downloaded config hung the loader (found by fuzz_hf_config); here it is an Error instead.
#include <memory>
#include <string>
#include <string_view>

namespace nibble {

class ModuleRegex {
 public:
  // `where` names the pattern's origin (file and field) for error messages.
  ModuleRegex(std::string pattern, std::string where);
  // Python's re.match: the pattern must match a prefix of `text`.
  bool match_prefix(std::string_view text) const;
  // Python's re.fullmatch: the pattern must match all of `text`.
  bool match_full(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  bool run(std::string_view text, bool whole) const;
  struct Impl;
  std::string pattern_, where_;
  std::shared_ptr<const Impl> impl_;  // shared: rules holding a pattern stay copyable
};

}  // namespace nibble
