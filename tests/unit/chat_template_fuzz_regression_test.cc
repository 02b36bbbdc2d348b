// Templates the chat-template fuzzer (fuzz/fuzz_chat_template.cc) found to escape as
// std::out_of_range (a crash) or to hit undefined float -> int casts; each must now render or
// give an nibble::Error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace nibble {
namespace {

std::string render(const std::string& source) {
  const nlohmann::json context = {{"items", nlohmann::json::array({{{"a", 1}}})}};
  return ChatTemplate(source).render(context, 0);
}

TEST(ChatTemplateFuzzRegression, HugeIntegerIndexAfterDotIsAnError) {
  // `x.<digits>` is an item lookup; the digits went through std::stoll.
  EXPECT_THROW(render("{{ items.99999999999999999999999 }}"), Error);
}

TEST(ChatTemplateFuzzRegression, HugeFloatLiteralIsInfinity) {
  // Python reads 1e999 as inf; std::stod threw out_of_range.
  EXPECT_EQ(render("{{ 1e999 > 1 }}"), "True");
}

TEST(ChatTemplateFuzzRegression, HugeNumericAttributePathIsAnError) {
  EXPECT_THROW(render("{{ items | map(attribute='99999999999999999999') | list }}"), Error);
}

TEST(ChatTemplateFuzzRegression, FloatToIntOutOfRangeIsAnError) {
  EXPECT_THROW(render("{{ 1e300 | int }}"), Error);
  EXPECT_THROW(render("{{ '1e300' | int }}"), Error);
  EXPECT_THROW(render("{{ 'nan' | float | int }}"), Error);
  EXPECT_EQ(render("{{ 2.75 | int }} {{ '-3.5' | int }}"), "2 -3");
}

}  // namespace
}  // namespace nibble
