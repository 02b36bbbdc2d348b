#include "tokenizer/incremental_detokenizer.h"

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace nibble {

namespace {
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Appends the complete part of `bytes` to `out` (invalid subparts as U+FFFD) and returns how
// many bytes were consumed; a trailing incomplete-but-valid prefix of a character is left.
size_t take_complete(std::string_view bytes, std::string& out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool incomplete = false;
    size_t length = text::valid_sequence_length(bytes, pos, &incomplete);
    if (length > 0) {
      out.append(bytes.substr(pos, length));
      pos += length;
    } else if (incomplete) {
      break;
    } else {
      // An invalid maximal subpart: skip the bytes that looked like a valid start.
      size_t skip = 1;
      while (pos + skip < bytes.size()) {
        std::string_view probe = bytes.substr(pos, skip + 1);
        bool probe_incomplete = false;
        text::valid_sequence_length(probe, 0, &probe_incomplete);
        if (!probe_incomplete) break;
        ++skip;
      }
      out.append(kReplacementChar);
      pos += skip;
    }
  }
  return pos;
}
}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                               std::span<const int32_t> context_ids)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      ids_(context_ids.begin(), context_ids.end()) {
  window_emitted_ = decode_window(0, ids_.size()).size();
}

bool IncrementalDetokenizer::is_skipped(int32_t id) const {
  return skip_special_tokens_ && tokenizer_.is_special(id);
}

std::string IncrementalDetokenizer::decode_window(size_t begin, size_t end) const {
  return tokenizer_.decode(std::span<const int32_t>(ids_).subspan(begin, end - begin),
                           skip_special_tokens_);
}

std::string IncrementalDetokenizer::push(int32_t id) {
  if (finished_) fail("incremental detokenizer: push after finish");
  ids_.push_back(id);
  std::string window = decode_window(window_begin_, ids_.size());
  std::string out;
  if (window.size() <= window_emitted_) return out;
  std::string_view fresh = std::string_view(window).substr(window_emitted_);
  size_t consumed = take_complete(fresh, out);
  window_emitted_ += consumed;
  if (consumed == fresh.size()) {
    // Nothing held back: restart the window at the last token that produces text, so decoding
    // stays O(1) per token while keeping one token of left context.
    size_t begin = ids_.size() - 1;
    while (begin > window_begin_ && is_skipped(ids_[begin])) --begin;
    if (begin != window_begin_) {
      window_begin_ = begin;
      window_emitted_ = decode_window(window_begin_, ids_.size()).size();
    }
  }
  text_ += out;
  return out;
}

std::string IncrementalDetokenizer::finish() {
  if (finished_) return {};
  finished_ = true;
  std::string window = decode_window(window_begin_, ids_.size());
  std::string out;
  if (window.size() > window_emitted_)
    out = text::to_valid_utf8(std::string_view(window).substr(window_emitted_));
  text_ += out;
  return out;
}

}  // namespace nibble
