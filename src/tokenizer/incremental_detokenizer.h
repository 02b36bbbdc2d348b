#pragma once
// Streaming detokenization: feed generated token ids one at a time and get back only complete
// UTF-8 text. Bytes of a character cut between tokens (byte-level BPE, <0xNN> byte fallback) are
// held back until the character completes; bytes that can never form a character are replaced
// by U+FFFD (maximal subparts, like Python's errors="replace").
//
// The text is decoded over a short window of recent tokens, not token by token, so decoders that
// look at their neighbours (SentencePiece's "strip the leading space of the first token") give
// the same text as decoding the whole sequence at once.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace nibble {

class IncrementalDetokenizer {
 public:
  // `context_ids` are the tokens before the first generated one (the prompt's tail: a few are
  // enough); their text is not returned but decides, e.g., whether a leading space is kept.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true,
                                  std::span<const int32_t> context_ids = {});

  // The newly completed text (possibly empty); always valid UTF-8.
  std::string push(int32_t id);
  // Flushes what is held back, replacing incomplete bytes by U+FFFD.
  std::string finish();

  const std::string& text() const { return text_; }  // everything returned so far

 private:
  std::string decode_window(size_t begin, size_t end) const;
  bool is_skipped(int32_t id) const;

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t window_begin_ = 0;    // first token of the decoding window
  size_t window_emitted_ = 0;  // bytes of the window's decoded text already returned
  std::string text_;
  bool finished_ = false;
};

}  // namespace nibble
