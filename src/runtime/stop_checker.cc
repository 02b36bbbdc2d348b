#include "runtime/stop_checker.h"

#include <algorithm>

namespace nibble {

StopChecker::StopChecker(const SamplingParams& params, std::vector<int32_t> eos_ids)
    : params_(params), stop_ids_(params.stop_token_ids) {
  if (!params.ignore_eos) stop_ids_.insert(stop_ids_.end(), eos_ids.begin(), eos_ids.end());
}

std::optional<FinishReason> StopChecker::update(int32_t token, const std::string& text,
                                                int64_t n_generated) {
  if (std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end()) {
    return FinishReason{FinishReason::Kind::kStop, token};
  }
  // Search only the tail a new token could have completed: the longest stop string plus
  // a margin for the token's own bytes.
  size_t longest = 0;
  for (const auto& s : params_.stop) longest = std::max(longest, s.size());
  const size_t from = text.size() > longest + 64 ? text.size() - longest - 64 : 0;
  std::optional<std::pair<size_t, std::string>> earliest;
  for (const auto& s : params_.stop) {
    if (s.empty()) continue;
    const size_t pos = text.find(s, from);
    if (pos != std::string::npos && (!earliest || pos < earliest->first)) earliest = {pos, s};
  }
  if (earliest) {
    stop_at_ = earliest->first;
    return FinishReason{FinishReason::Kind::kStop, earliest->second};
  }
  if (n_generated >= params_.max_new_tokens) return FinishReason{FinishReason::Kind::kLength, {}};
  return std::nullopt;
}

size_t StopChecker::emittable_length(const std::string& text, bool finished) const {
  if (stop_at_) return std::min(*stop_at_, text.size());
  if (finished) return text.size();
  // Hold back the longest suffix of `text` that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : params_.stop) {
    if (s.empty()) continue;
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return text.size() - hold;
}

}  // namespace nibble
