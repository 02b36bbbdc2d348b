#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/atomic_file.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/huge_page_allocator.h"
#include "core/numeric.h"
#include "core/thread_pool.h"

namespace nibble {
namespace {

TEST(Numeric, Bf16RoundTripsAndRoundsToNearestEven) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-1e4f, 1e4f);
  for (int i = 0; i < 10000; ++i) {
    const float x = dist(rng);
    const float y = bf16_to_f32(f32_to_bf16(x));
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * (1.0f / 256.0f));
  }
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
}

TEST(Numeric, F16MatchesIeeeForAllValues) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << "h=" << h;
  }
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // overflow rounds to inf
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
}

TEST(Numeric, Fp8E4m3KnownValues) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(fp8_e5m2_to_f32(0x3c), 1.0f);
  EXPECT_TRUE(std::isinf(fp8_e5m2_to_f32(0x7c)));
}

TEST(DType, NamesRoundTrip) {
  for (auto t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                 DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  }
  EXPECT_FALSE(dtype_from_name("F4").has_value());
}

TEST(HugePageAllocator, LargeBuffersAre2MiBAlignedAndKeepTheirValues) {
  // 3 MiB + 1 element: rounded up to whole huge pages internally, sized exactly outside.
  nibble::HugePageVector<uint16_t> big((size_t(3) << 19) + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % nibble::kHugePageBytes, 0u);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint16_t(i * 2654435761u);
  nibble::HugePageVector<uint16_t> copy = big;
  big.push_back(7);  // reallocates across the large path
  for (size_t i = 0; i + 1 < big.size(); ++i) ASSERT_EQ(big[i], copy[i]) << i;
  EXPECT_EQ(big.back(), 7);
  nibble::HugePageVector<float> small(100, 1.5f);  // the ordinary allocator
  EXPECT_EQ(small[99], 1.5f);
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 1000, 12345}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(AtomicFile, LeavesNothingWhenNotCommitted) {
  const auto dir = std::filesystem::temp_directory_path() / "nibble_atomic_test";
  std::filesystem::create_directories(dir);
  const auto target = dir / "out.bin";
  std::filesystem::remove(target);
  {
    AtomicFileWriter w(target);
    w.write("partial");
  }
  EXPECT_FALSE(std::filesystem::exists(target));
  for (auto& entry : std::filesystem::directory_iterator(dir)) ADD_FAILURE() << entry.path();
  write_file_atomic(target, "done");
  std::ifstream in(target);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "done");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nibble
