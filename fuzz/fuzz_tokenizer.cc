// tokenizer.json: Tokenizer::from_json (normalizers, pre-tokenizers with their regexes, the
// BPE model and merges, added tokens, post-processor, decoders), then encode of fuzz-chosen
// text with and without special tokens, decode and decode_text of the result and of arbitrary
// ids (negative, out of range), and the server's streaming IncrementalDetokenizer.
// Input: tokenizer.json, a NUL byte, then the text to encode.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_text.h"

namespace {

// Valid UTF-8 is the documented promise of decode_text and of the detokenizer.
void require_valid_utf8(std::string_view text) {
  if (!nibble::text::is_valid_utf8(text)) __builtin_trap();
}

void exercise(const nibble::Tokenizer& tokenizer, std::string_view text) {
  const int64_t vocab = tokenizer.vocab_size();
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tokenizer.encode(text, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab) __builtin_trap();  // encode must stay inside the vocabulary
    }
    (void)tokenizer.decode(ids, false);
    require_valid_utf8(tokenizer.decode_text(ids, special));
    nibble::IncrementalDetokenizer detokenizer(tokenizer, special);
    for (int32_t id : ids) require_valid_utf8(detokenizer.push(id));
    require_valid_utf8(detokenizer.finish());
  }
  // Ids read from the text bytes: what a client could send as a token prompt, unvalidated.
  std::vector<int32_t> raw(text.size() / 4);
  if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);
  (void)tokenizer.decode(raw, true);
  require_valid_utf8(tokenizer.decode_text(raw, false));
  for (int32_t id : raw) {
    (void)tokenizer.is_special(id);
    try {
      (void)tokenizer.token_to_id(tokenizer.id_to_token(id));
    } catch (const nibble::Error&) {
    }
  }
  (void)tokenizer.bos_id();
  (void)tokenizer.eos_id();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [json_text, text] = nibble::fuzz::split_at_nul(nibble::fuzz::as_text(data, size));
  const auto spec = nibble::fuzz::parse_json(json_text);
  if (!spec) return 0;
  try {
    (void)nibble::gguf_pre_tokenizer_name(*spec);
  } catch (const nibble::Error&) {
  }
  std::unique_ptr<nibble::Tokenizer> tokenizer;
  try {
    tokenizer = nibble::Tokenizer::from_json(*spec, "fuzz-tokenizer.json");
  } catch (const nibble::Error&) {
    return 0;
  }
  exercise(*tokenizer, text);
  return 0;
}
