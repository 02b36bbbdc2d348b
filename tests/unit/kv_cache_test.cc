// The KV cache's element types: what store() keeps and load() gives back, against the scalar
// conversions, and the scale sources (checkpoint tensors, --quantization-param-path JSON).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/reference/fp8.h"
#include "runtime/kv_cache.h"
#include "runtime/kv_scales.h"

namespace nibble {
namespace {

std::vector<float> random_values(size_t n, float scale) {
  static std::mt19937 gen(std::random_device{}());
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

TEST(KvCacheDtypes, StoreThenLoadRoundsEachElementOnce) {
  const int64_t head_dim = 24, block = 4;
  for (KvDType dtype : {KvDType::F32, KvDType::BF16, KvDType::Fp8E4M3, KvDType::Fp8E5M2}) {
    KvCache cache(2, 3, head_dim, block, 5, dtype);
    const float k_scale = 0.37f, v_scale = 2.5f;
    cache.set_scales(1, k_scale, v_scale);
    EXPECT_EQ(cache.nbytes(), size_t(2 * 2 * 5 * 3 * block * head_dim * kv_dtype_bytes(dtype)));
    const auto keys = random_values(size_t(block * head_dim), 3.0f);
    const auto values = random_values(size_t(block * head_dim), 3.0f);
    const int64_t base = 2 * cache.block_stride();
    for (int64_t slot = 0; slot < block; ++slot)
      cache.store(1, 2, base + slot * head_dim, keys.data() + slot * head_dim,
                  values.data() + slot * head_dim);
    std::vector<float> k_out(keys.size()), v_out(values.size());
    cache.load(1, 2, base, block, k_out.data(), v_out.data());
    for (size_t i = 0; i < keys.size(); ++i) {
      float want_k = keys[i], want_v = values[i];
      switch (dtype) {
        case KvDType::F32: break;
        case KvDType::BF16:
          want_k = bf16_to_f32(f32_to_bf16(keys[i]));
          want_v = bf16_to_f32(f32_to_bf16(values[i]));
          break;
        case KvDType::Fp8E4M3:
          want_k = fp8_e4m3_to_f32(quant::f32_to_fp8_e4m3(keys[i] * (1.0f / k_scale))) * k_scale;
          want_v = fp8_e4m3_to_f32(quant::f32_to_fp8_e4m3(values[i] * (1.0f / v_scale))) * v_scale;
          break;
        case KvDType::Fp8E5M2:
          // Two mantissa bits: within 2^-3 relative of the input, or the subnormal step.
          EXPECT_NEAR(k_out[i], keys[i], std::fabs(keys[i]) * 0.125 + k_scale * 1.6e-5) << i;
          EXPECT_NEAR(v_out[i], values[i], std::fabs(values[i]) * 0.125 + v_scale * 1.6e-5) << i;
          continue;
      }
      EXPECT_EQ(k_out[i], want_k) << kv_dtype_name(dtype) << " key " << i;
      EXPECT_EQ(v_out[i], want_v) << kv_dtype_name(dtype) << " value " << i;
    }
  }
}

TEST(KvCacheDtypes, NamesAndBadScales) {
  EXPECT_EQ(parse_kv_cache_dtype("auto"), KvDType::F32);
  EXPECT_EQ(parse_kv_cache_dtype("bfloat16"), KvDType::BF16);
  EXPECT_EQ(parse_kv_cache_dtype("fp8_e4m3"), KvDType::Fp8E4M3);
  EXPECT_EQ(parse_kv_cache_dtype("fp8_e5m2"), KvDType::Fp8E5M2);
  try {
    parse_kv_cache_dtype("int3");
    FAIL() << "int3 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-cache-dtype"), std::string::npos) << e.what();
  }
  KvCache cache(1, 1, 8, 4, 1, KvDType::Fp8E4M3);
  EXPECT_THROW(cache.set_scales(0, 0.0f, 1.0f), Error);
  EXPECT_THROW(cache.set_scales(0, 1.0f, NAN), Error);
  EXPECT_THROW(cache.set_scales(1, 1.0f, 1.0f), Error);
}

TEST(KvCacheScales, JsonFileGivesOneScalePerLayer) {
  const auto dir = std::filesystem::temp_directory_path() / "nibble_kv_scales_test";
  std::filesystem::create_directories(dir);
  const auto good = dir / "good.json";
  std::ofstream(good) << R"({"model_type": "llama", "kv_cache": {"dtype": "float8_e4m3fn",
      "scaling_factor": {"0": {"0": 0.5, "1": 0.25}}}})";
  const KvScales scales = read_kv_scales_json(good, 2);
  ASSERT_EQ(scales.size(), 2u);
  EXPECT_EQ(scales[1], std::make_pair(0.25f, 0.25f));
  const KvCacheSpec spec = resolve_kv_cache("fp8_e4m3", good.string(), nullptr, 2);
  EXPECT_EQ(spec.dtype, KvDType::Fp8E4M3);
  EXPECT_EQ(spec.scales.size(), 2u);

  try {
    read_kv_scales_json(good, 3);
    FAIL() << "layer 2 missing, accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2"), std::string::npos) << e.what();
  }
  const auto bad = dir / "bad.json";
  std::ofstream(bad) << R"({"kv_cache": {"scaling_factor": {"0": {"0": -1}}}})";
  EXPECT_THROW(read_kv_scales_json(bad, 1), Error);
  // A scales file asks for an fp8 cache.
  EXPECT_THROW(resolve_kv_cache("auto", good.string(), nullptr, 2), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nibble
