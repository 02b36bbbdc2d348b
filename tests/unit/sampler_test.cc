#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "core/error.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "runtime/stop_checker.h"

namespace nibble {
namespace {

std::vector<float> random_logits(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(Sampler, GreedyPicksArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  const auto logits = random_logits(1000, std::random_device{}());
  Sampler s(p, {});
  auto copy = logits;
  const auto expected = std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_EQ(s.sample(copy), expected);
}

TEST(Sampler, SeedMakesSamplingReproducible) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.seed = 42;
  const auto logits = random_logits(500, std::random_device{}());
  std::vector<int32_t> a, b;
  Sampler sa(p, {}), sb(p, {});
  for (int i = 0; i < 50; ++i) {
    auto la = logits, lb = logits;
    a.push_back(sa.sample(la));
    b.push_back(sb.sample(lb));
  }
  EXPECT_EQ(a, b);
}

TEST(Sampler, TopKRestrictsToTheKBest) {
  SamplingParams p;
  p.top_k = 3;
  p.temperature = 5.0f;  // flat distribution: all of the top 3 get picked
  const auto logits = random_logits(100, std::random_device{}());
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  Sampler s(p, {});
  std::map<int32_t, int> seen;
  for (int i = 0; i < 300; ++i) {
    auto l = logits;
    seen[s.sample(l)]++;
  }
  EXPECT_EQ(seen.size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_GT(seen[order[k]], 0);
}

TEST(Sampler, FrequenciesFollowSoftmax) {
  // Three tokens with known probabilities; 20000 draws are within 2% of them.
  SamplingParams p;
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler s(p, {});
  std::vector<int> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = logits;
    counts[s.sample(l)]++;
  }
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
}

TEST(Sampler, TopPAndMinPCutTheTail) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.25f), std::log(0.1f),
                                     std::log(0.05f)};
  SamplingParams top_p;
  top_p.top_p = 0.8f;  // 0.6 + 0.25 reaches 0.8: tokens 0 and 1 only
  SamplingParams min_p;
  min_p.min_p = 0.3f;  // threshold 0.18: tokens 0 and 1 only
  for (const auto& p : {top_p, min_p}) {
    Sampler s(p, {});
    for (int i = 0; i < 500; ++i) {
      auto l = logits;
      EXPECT_LE(s.sample(l), 1);
    }
  }
}

TEST(Sampler, RepetitionPenaltyFollowsTransformers) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  std::vector<float> logits = {4.0f, 3.0f, -1.0f};
  const std::vector<int32_t> prompt = {0, 2};
  Sampler s(p, prompt);
  // Token 0: 4 / 2 = 2 < 3, so token 1 wins.
  EXPECT_EQ(s.sample(logits), 1);
  EXPECT_FLOAT_EQ(logits[0], 2.0f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountOutputTokens) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 0.5f;
  Sampler s(p, {});
  std::vector<float> first = {3.0f, 2.0f};
  EXPECT_EQ(s.sample(first), 0);
  std::vector<float> second = {3.0f, 2.0f};
  EXPECT_EQ(s.sample(second), 1);  // 3 - 1 - 0.5 = 1.5 < 2
  EXPECT_FLOAT_EQ(second[0], 1.5f);
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.temperature = -1.0f;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.min_p = 2.0f;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.max_new_tokens = -5;
  EXPECT_THROW(p.validate(), Error);
}

TEST(StopChecker, StopTokenAndLength) {
  SamplingParams p;
  p.max_new_tokens = 3;
  StopChecker c(p, {7});
  EXPECT_FALSE(c.update(1, "a", 1));
  auto f = c.update(7, "a", 2);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->name(), "stop");
  EXPECT_EQ(std::get<int32_t>(f->matched), 7);
  StopChecker length(p, {7});
  EXPECT_FALSE(length.update(1, "a", 1));
  EXPECT_FALSE(length.update(1, "aa", 2));
  EXPECT_EQ(length.update(1, "aaa", 3)->name(), "length");
}

TEST(StopChecker, IgnoreEosKeepsGoing) {
  SamplingParams p;
  p.ignore_eos = true;
  p.stop_token_ids = {9};
  StopChecker c(p, {7});
  EXPECT_FALSE(c.update(7, "x", 1));
  EXPECT_TRUE(c.update(9, "x", 2));
}

TEST(StopChecker, StopStringTruncatesAndHoldsBackPrefixes) {
  SamplingParams p;
  p.stop = {"###", "END"};
  StopChecker c(p, {});
  EXPECT_FALSE(c.update(1, "hello #", 1));
  // "#" could start "###": held back while streaming.
  EXPECT_EQ(c.emittable_length("hello #", false), 6u);
  EXPECT_EQ(c.emittable_length("hello E", false), 6u);
  EXPECT_EQ(c.emittable_length("hello x", false), 7u);
  auto f = c.update(2, "hello ### world", 2);
  ASSERT_TRUE(f);
  EXPECT_EQ(std::get<std::string>(f->matched), "###");
  EXPECT_EQ(c.emittable_length("hello ### world", true), 6u);
}

TEST(Utf8, CompletePrefixHoldsBackPartialSequences) {
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, 3 bytes
  EXPECT_EQ(complete_utf8_prefix("ab"), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab" + euro), 5u);
  EXPECT_EQ(complete_utf8_prefix("ab" + euro.substr(0, 2)), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab" + euro.substr(0, 1)), 2u);
  const std::string emoji = "\xF0\x9F\x98\x80";
  for (size_t cut = 1; cut < 4; ++cut)
    EXPECT_EQ(complete_utf8_prefix("x" + emoji.substr(0, cut)), 1u);
  EXPECT_EQ(complete_utf8_prefix("x" + emoji), 5u);
}

}  // namespace
}  // namespace nibble
