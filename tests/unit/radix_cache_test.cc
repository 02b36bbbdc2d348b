// The radix prefix cache over whole KV blocks: matching, duplicate inserts, reference counts
// and least-recently-used eviction of unreferenced leaves.
#include "runtime/radix_cache.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"

namespace nibble {
namespace {

constexpr int64_t kBlock = 4;

std::vector<int32_t> random_tokens(size_t n) {
  static std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> dist(0, 1000);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = dist(rng);
  return v;
}

std::vector<int32_t> join(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(RadixCache, MatchesWholeBlocksOnly) {
  RadixCache cache(kBlock);
  const auto tokens = random_tokens(3 * kBlock);
  EXPECT_TRUE(cache.match(tokens).blocks.empty());
  EXPECT_EQ(cache.match(tokens).last, nullptr);

  auto inserted = cache.insert(tokens, std::vector<int32_t>{7, 8, 9});
  EXPECT_EQ(inserted.blocks, (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(cache.cached_blocks(), 3);

  // A prompt with 2.5 matching blocks reuses two.
  auto prefix = std::vector<int32_t>(tokens.begin(), tokens.begin() + 2 * kBlock + 2);
  EXPECT_EQ(cache.match(prefix).blocks, (std::vector<int32_t>{7, 8}));
  // A difference inside block 1 stops the match after block 0.
  auto changed = tokens;
  changed[kBlock + 1] += 1;
  EXPECT_EQ(cache.match(changed).blocks, (std::vector<int32_t>{7}));
  changed[0] += 1;
  EXPECT_TRUE(cache.match(changed).blocks.empty());
}

TEST(RadixCache, DuplicateInsertKeepsTheTreeBlock) {
  RadixCache cache(kBlock);
  const auto shared = random_tokens(kBlock);
  const auto a = join(shared, random_tokens(kBlock));
  const auto b = join(shared, random_tokens(kBlock));
  cache.insert(a, std::vector<int32_t>{1, 2});
  // b was computed into its own blocks 5, 6; block 5 duplicates the tree's block 1.
  auto result = cache.insert(b, std::vector<int32_t>{5, 6});
  EXPECT_EQ(result.blocks, (std::vector<int32_t>{1, 6}));
  EXPECT_EQ(cache.cached_blocks(), 3);
  EXPECT_EQ(cache.match(b).blocks, (std::vector<int32_t>{1, 6}));
  EXPECT_THROW(cache.insert(random_tokens(kBlock + 1), std::vector<int32_t>{3}), Error);
}

TEST(RadixCache, LockedPathsAreNotEvicted) {
  RadixCache cache(kBlock);
  const auto shared = random_tokens(kBlock);
  const auto a = join(shared, random_tokens(kBlock));
  const auto b = join(shared, random_tokens(2 * kBlock));
  auto in_a = cache.insert(a, std::vector<int32_t>{0, 1});
  auto in_b = cache.insert(b, std::vector<int32_t>{0, 2, 3});
  EXPECT_EQ(cache.cached_blocks(), 4);
  EXPECT_EQ(cache.evictable_blocks(), 4);

  cache.lock(in_b.last);  // pins 3, 2 and the shared 0
  EXPECT_EQ(cache.locked_blocks(), 3);
  EXPECT_EQ(cache.evictable_blocks(), 1);
  std::vector<int32_t> freed;
  auto release = [&](int32_t block) { freed.push_back(block); };
  EXPECT_EQ(cache.evict(10, release), 1);
  EXPECT_EQ(freed, (std::vector<int32_t>{1}));
  EXPECT_EQ(cache.match(b).blocks.size(), 3u);

  cache.lock(in_b.last);  // two holders
  cache.unlock(in_b.last);
  EXPECT_EQ(cache.evict(10, release), 0);
  cache.unlock(in_b.last);
  EXPECT_EQ(cache.locked_blocks(), 0);
  EXPECT_THROW(cache.unlock(in_b.last), Error);
  // Leaves go before their parents.
  EXPECT_EQ(cache.evict(10, release), 3);
  EXPECT_EQ(freed, (std::vector<int32_t>{1, 3, 2, 0}));
  EXPECT_EQ(cache.cached_blocks(), 0);
  (void)in_a;
}

TEST(RadixCache, EvictsLeastRecentlyUsedFirst) {
  RadixCache cache(kBlock);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(random_tokens(kBlock));
    cache.insert(prompts.back(), std::vector<int32_t>{int32_t(10 + i)});
  }
  cache.match(prompts[0]);  // now the most recent
  cache.match(prompts[2]);
  std::vector<int32_t> freed;
  EXPECT_EQ(cache.evict(2, [&](int32_t b) { freed.push_back(b); }), 2);
  EXPECT_EQ(freed, (std::vector<int32_t>{11, 13}));
  EXPECT_EQ(cache.evict(1, [&](int32_t b) { freed.push_back(b); }), 1);
  EXPECT_EQ(freed.back(), 10);
  EXPECT_EQ(cache.cached_blocks(), 1);
}

TEST(RadixCache, RandomWorkloadKeepsCountsConsistent) {
  RadixCache cache(kBlock);
  std::mt19937 rng(std::random_device{}());
  const auto base = random_tokens(6 * kBlock);
  int32_t next_block = 0;
  std::vector<RadixCache::Node*> held;
  std::vector<int32_t> live;  // blocks owned by the tree, per our own accounting
  for (int round = 0; round < 300; ++round) {
    // Prompts share a random-length prefix of `base`, then diverge.
    const size_t keep = size_t(rng() % 6) * kBlock;
    auto prompt = std::vector<int32_t>(base.begin(), base.begin() + std::ptrdiff_t(keep));
    prompt = join(prompt, random_tokens(size_t(rng() % 3) * kBlock));
    if (prompt.empty()) continue;
    std::vector<int32_t> blocks(prompt.size() / kBlock);
    for (auto& b : blocks) b = next_block++;
    auto result = cache.insert(prompt, blocks);
    for (size_t i = 0; i < blocks.size(); ++i)
      if (result.blocks[i] == blocks[i]) live.push_back(blocks[i]);
    if (rng() % 2) {
      cache.lock(result.last);
      held.push_back(result.last);
    }
    if (!held.empty() && rng() % 3 == 0) {
      cache.unlock(held.back());
      held.pop_back();
    }
    const int64_t evictable = cache.evictable_blocks();
    cache.evict(int64_t(rng() % 4), [&](int32_t b) { std::erase(live, b); });
    ASSERT_LE(cache.evictable_blocks(), evictable);
    ASSERT_EQ(cache.cached_blocks(), int64_t(live.size()));
  }
  for (auto* node : held) cache.unlock(node);
  EXPECT_EQ(cache.locked_blocks(), 0);
  cache.evict(1 << 20, [&](int32_t b) { std::erase(live, b); });
  EXPECT_EQ(cache.cached_blocks(), 0);
  EXPECT_TRUE(live.empty());
}

}  // namespace
}  // namespace nibble
