// Tokenizer unit tests: streaming detokenization never yields broken UTF-8, and malformed
// tokenizer.json files give errors that name the field.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "core/error.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/synthetic_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_text.h"

namespace nibble {
namespace {

using nlohmann::json;

// Byte tokens, a few words, Llama-2's decoder chain; <s>=1, </s>=2, <0x00>=3.
json byte_fallback_spec() { return byte_fallback_tokenizer_json({"<s>", "</s>"}); }

TEST(TokenizerBpe, ByteFallbackAndMerges) {
  auto tokenizer = Tokenizer::from_json(byte_fallback_spec(), "test.json");
  // "hi" -> "▁hi" (both merges, the list form and the string form); "€" has no token: 3 bytes.
  auto ids = tokenizer->encode("hi \xE2\x82\xAC", true);
  std::vector<int32_t> expected = {1, 263, 259, 3 + 0xE2, 3 + 0x82, 3 + 0xAC};
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tokenizer->decode_text(ids, true), "hi \xE2\x82\xAC");
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_TRUE(tokenizer->is_special(1));
  EXPECT_THROW(tokenizer->id_to_token(100000), Error);
}

TEST(TokenizerIncremental, RandomSplitsNeverBreakUtf8) {
  auto tokenizer = Tokenizer::from_json(byte_fallback_spec(), "test.json");
  std::mt19937 rng(std::random_device{}());
  const std::vector<std::string> alphabet = {"h",      "i",          " ",     "\u00e9",
                                             "\u20ac", "\U0001F600", "\u4e2d"};
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    int length = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < length; ++i) text += alphabet[rng() % alphabet.size()];
    auto ids = tokenizer->encode(text, false);
    IncrementalDetokenizer detokenizer(*tokenizer, true);
    std::string streamed;
    for (int32_t id : ids) {
      std::string piece = detokenizer.push(id);
      ASSERT_TRUE(text::is_valid_utf8(piece)) << text;
      streamed += piece;
    }
    streamed += detokenizer.finish();
    EXPECT_EQ(streamed, tokenizer->decode_text(ids, true)) << text;
  }
}

TEST(TokenizerIncremental, HoldsBackIncompleteBytesAndFlushesInvalid) {
  auto tokenizer = Tokenizer::from_json(byte_fallback_spec(), "test.json");
  IncrementalDetokenizer detokenizer(*tokenizer, true);
  EXPECT_EQ(detokenizer.push(3 + 0xE2), "");
  EXPECT_EQ(detokenizer.push(3 + 0x82), "");
  EXPECT_EQ(detokenizer.push(3 + 0xAC), "\xE2\x82\xAC");
  EXPECT_EQ(detokenizer.push(3 + 0xF0), "");
  EXPECT_EQ(detokenizer.push(3 + 0x41),
            "\xEF\xBF\xBD"
            "A");  // F0 can't be followed by 'A'
  EXPECT_EQ(detokenizer.push(3 + 0xE4), "");
  EXPECT_EQ(detokenizer.finish(), "\xEF\xBF\xBD");
}

TEST(TokenizerIncremental, ContextKeepsLeadingSpace) {
  auto tokenizer = Tokenizer::from_json(byte_fallback_spec(), "test.json");
  std::vector<int32_t> context = {263};  // "▁hi"
  IncrementalDetokenizer detokenizer(*tokenizer, true, context);
  EXPECT_EQ(detokenizer.push(263), " hi");
  IncrementalDetokenizer fresh(*tokenizer, true);
  EXPECT_EQ(fresh.push(263), "hi");
}

void expect_error(const json& spec, const std::string& fragment) {
  try {
    Tokenizer::from_json(spec, "bad.json");
    FAIL() << "expected an error containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

TEST(TokenizerJson, MalformedFilesNameTheField) {
  expect_error(json{{"version", "1.0"}}, "missing field 'model'");
  json bad_merge = byte_fallback_spec();
  bad_merge["model"]["merges"].push_back("\u2581hi zz");
  expect_error(bad_merge, "model.merges[2]");
  json three_parts = byte_fallback_spec();
  three_parts["model"]["merges"][0] = "a b c";
  expect_error(three_parts, "model.merges[0]");
  json bad_id = byte_fallback_spec();
  bad_id["model"]["vocab"]["h"] = -3;
  expect_error(bad_id, "out of range");
  json huge_id = byte_fallback_spec();
  huge_id["added_tokens"][0]["id"] = 1LL << 40;
  expect_error(huge_id, "added_tokens[0].id");
  json bad_unk = byte_fallback_spec();
  bad_unk["model"]["unk_token"] = "<nope>";
  expect_error(bad_unk, "unk_token");
  json bad_type = byte_fallback_spec();
  bad_type["model"]["type"] = "WordPiece";
  expect_error(bad_type, "unsupported model type");
  json bad_regex = byte_fallback_spec();
  bad_regex["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(bad_regex, "pre_tokenizer.pattern");
  json bad_template = byte_fallback_spec();
  bad_template["post_processor"]["special_tokens"]["<s>"]["ids"] = {999999};
  expect_error(bad_template, "out of range");
}

}  // namespace
}  // namespace nibble
