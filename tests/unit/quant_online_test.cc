// Online quantization (quant/online.h): names and refusals, each method's codes and scales as
// specified on fresh random weights with stated error bounds, the Q4_K reference quantizer, and
// the bitsandbytes 4-bit loader on hand-built tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_kquant.h"
#include "formats/memory_checkpoint.h"
#include "quant/formats/loaders.h"
#include "quant/online.h"
#include "quant/quantized_checkpoint.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/online_quantize.h"
#include "quant/resolve.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

using nlohmann::json;

template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::mt19937 fresh_rng() { return std::mt19937(std::random_device{}()); }

// Random bf16-representable weights (what SGLang holds for a bf16 checkpoint), a few outliers.
std::vector<float> random_weights(std::mt19937& rng, size_t n, float sigma = 0.05f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> w(n);
  for (auto& x : w) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  for (int i = 0; i < 4; ++i) w[pick(rng)] *= 8.0f;
  return w;
}

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

float row_amax(const std::vector<float>& w, int64_t n, int64_t k0, int64_t k1, int64_t cols) {
  float a = 0;
  for (int64_t k = k0; k < k1; ++k) a = std::max(a, std::fabs(w[size_t(n * cols + k)]));
  return a;
}

LinearScheme quantize(const std::string& quantization, const std::string& torchao,
                      const std::vector<float>& w, int64_t rows, int64_t cols) {
  const auto method = parse_online_method(quantization, torchao);
  EXPECT_TRUE(method.has_value());
  LinearScheme s = quantize_online(*method, w, rows, cols);
  validate(s.weight, s.method);
  return s;
}

TEST(QuantOnline, NamesParseToTheirMethods) {
  for (const auto& name : online_quantization_names()) {
    const auto m = parse_online_method(name, "");
    ASSERT_TRUE(m.has_value()) << name;
    EXPECT_EQ(m->name, name);
    EXPECT_FALSE(m->from_torchao);
  }
  for (const auto& name : torchao_config_names()) {
    const auto m = parse_online_method("", name);
    ASSERT_TRUE(m.has_value()) << name;
    EXPECT_EQ(m->name, name);
    EXPECT_TRUE(m->from_torchao);
  }
  EXPECT_EQ(online_method_names().size(),
            online_quantization_names().size() + torchao_config_names().size());
  EXPECT_EQ(parse_online_method("FP8", "")->name, "fp8");
  EXPECT_EQ(parse_online_method("", "int4wo-64")->group_size, 64);
  EXPECT_EQ(parse_online_method("int4", "")->group_size, 128);
  EXPECT_EQ(parse_online_method("bitsandbytes", "")->group_size, 64);
  EXPECT_TRUE(parse_online_method("", "fp8dq-per_tensor")->per_tensor);
  EXPECT_FALSE(parse_online_method("", "").has_value());
  EXPECT_FALSE(parse_online_method("unquant", "").has_value());

  const auto act = [](const std::string& q, const std::string& t) {
    return parse_online_method(q, t)->act.kind;
  };
  EXPECT_EQ(act("fp8", ""), ActQuantKind::DynamicPerTokenFp8);
  EXPECT_EQ(act("w8a8_fp8", ""), ActQuantKind::DynamicPerTokenFp8);
  EXPECT_EQ(act("w8a8_int8", ""), ActQuantKind::DynamicPerTokenInt8);
  EXPECT_EQ(act("", "int8dq"), ActQuantKind::DynamicPerTokenInt8);
  EXPECT_EQ(act("", "fp8dq-per_row"), ActQuantKind::DynamicPerTokenFp8);
  EXPECT_EQ(act("", "fp8dq-per_tensor"), ActQuantKind::DynamicPerTokenFp8);
  for (const char* weight_only : {"int8wo", "fp8wo", "int4wo-128"})
    EXPECT_EQ(act("", weight_only), ActQuantKind::None) << weight_only;
  for (const char* weight_only : {"bitsandbytes", "int4", "q4_0", "q4_k", "q8_0"})
    EXPECT_EQ(act(weight_only, ""), ActQuantKind::None) << weight_only;
}

TEST(QuantOnline, RefusesUnknownAndConflictingValues) {
  expect_error([] { parse_online_method("fp8", "int8wo"); }, "both ask for online quantization");
  expect_error([] { parse_online_method("", "int4wo-100"); },
               "--torchao-config: unknown value 'int4wo-100'; must be one of: int8dq, int8wo");
  expect_error([] { parse_online_method("int8wo", ""); }, "pass --torchao-config int8wo");
  expect_error([] { parse_online_method("awq", ""); }, "--quantization awq: not an online method");
  expect_error([] { parse_online_method("int3", ""); },
               "unknown method 'int3'; online methods are: fp8, w8a8_fp8, w8a8_int8");
}

TEST(QuantOnline, ResolutionAcceptsOnlineMethodsOnlyOnUnquantizedCheckpoints) {
  for (const auto& name : online_quantization_names())
    EXPECT_FALSE(apply_user_quantization(std::nullopt, name).has_value()) << name;
  EXPECT_FALSE(apply_user_quantization(std::nullopt, "", "int4wo-128").has_value());
  expect_error([] { apply_user_quantization(std::nullopt, "gptq"); },
               "--quantization gptq: the checkpoint has no quantization config");
  // SGLang's rule on a pre-quantized checkpoint: the same method is a no-op, others refused.
  const QuantConfig fp8 = parse_quantization_config(json{{"quant_method", "fp8"}}, "c");
  EXPECT_EQ(apply_user_quantization(fp8, "fp8")->method, "fp8");
  expect_error([&] { apply_user_quantization(fp8, "int4"); },
               "model config (fp8) does not match the quantization method specified in the "
               "quantization argument (int4)");
  expect_error([&] { apply_user_quantization(fp8, "q4_k"); }, "(q4_k)");
  expect_error([&] { apply_user_quantization(fp8, "", "int8wo"); },
               "--torchao-config int8wo: torchao quantizes the dense weights of an unquantized");
  const QuantConfig bnb = parse_quantization_config(
      json{{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}}, "c");
  EXPECT_EQ(apply_user_quantization(bnb, "bitsandbytes")->method, "bitsandbytes");
}

TEST(QuantOnline, Fp8PerRowScalesAreAmaxOver448) {
  auto rng = fresh_rng();
  const int64_t N = 24, K = 96;
  const auto w = random_weights(rng, N * K);
  for (const char* name : {"fp8", "w8a8_fp8"}) {
    const LinearScheme s = quantize(name, "", w, N, K);
    EXPECT_EQ(s.method, name);
    ASSERT_EQ(s.weight.elem, ElemType::Fp8E4M3);
    ASSERT_EQ(s.weight.granularity(), ScaleGranularity::PerChannel);
    const auto deq = dequantize(s.weight);
    for (int64_t n = 0; n < N; ++n) {
      const float scale = s.weight.scales[size_t(n)];
      EXPECT_EQ(scale, row_amax(w, n, 0, K, K) / 448.0f);
      // e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 of the value (subnormals: 2^-10 · 448).
      for (int64_t k = 0; k < K; ++k) {
        const float x = w[size_t(n * K + k)];
        EXPECT_LE(std::fabs(deq[size_t(n * K + k)] - x),
                  std::max(std::fabs(x) * 0.0625f, scale * 0.001953125f) * 1.0001f);
      }
    }
  }
}

TEST(QuantOnline, W8a8Int8IsSymmetricPerRowOver127Point5) {
  auto rng = fresh_rng();
  const int64_t N = 16, K = 80;
  const auto w = random_weights(rng, N * K);
  const LinearScheme s = quantize("w8a8_int8", "", w, N, K);
  ASSERT_EQ(s.weight.elem, ElemType::Int8);
  const auto deq = dequantize(s.weight);
  for (int64_t n = 0; n < N; ++n) {
    const float scale = s.weight.scales[size_t(n)];
    EXPECT_EQ(scale, row_amax(w, n, 0, K, K) / 127.5f);
    for (int64_t k = 0; k < K; ++k)  // round to nearest: half a step
      EXPECT_LE(std::fabs(deq[size_t(n * K + k)] - w[size_t(n * K + k)]), scale * 0.5001f);
  }
}

TEST(QuantOnline, TorchaoInt8RoundsLikeBf16Torch) {
  auto rng = fresh_rng();
  const int64_t N = 16, K = 64;
  const auto w = random_weights(rng, N * K);
  for (const char* name : {"int8wo", "int8dq"}) {
    const LinearScheme s = quantize("", name, w, N, K);
    ASSERT_EQ(s.weight.elem, ElemType::Int8);
    EXPECT_EQ(s.weight.scale_dtype, ScaleDType::BF16);
    const auto deq = dequantize(s.weight);
    for (int64_t n = 0; n < N; ++n) {
      const float scale = s.weight.scales[size_t(n)];
      EXPECT_EQ(scale, bf16_round(row_amax(w, n, 0, K, K) / 127.5f));
      const float inverse = bf16_round(1.0f / scale);
      for (int64_t k = 0; k < K; ++k) {
        const float x = w[size_t(n * K + k)];
        const auto code = static_cast<int>(sign_extend(get_code(s.weight, n, k), 8));
        // torch: round(bf16(x · bf16(1 / scale))), clamped to [-128, 127].
        EXPECT_EQ(code, std::clamp(int(std::nearbyint(bf16_round(x * inverse))), -128, 127));
        // Half a step from rounding, up to 2 × 128·2^-9 steps from the bf16 reciprocal and
        // product, and half a step more where a bf16 scale rounded down clamps a code at 127.
        EXPECT_LE(std::fabs(deq[size_t(n * K + k)] - x), scale * 1.5f);
      }
    }
  }
}

TEST(QuantOnline, TorchaoInt4IsTinygemmAsymmetricWithFloatZeros) {
  auto rng = fresh_rng();
  const int64_t N = 8;
  for (int64_t group : {32, 64, 128, 256}) {
    const int64_t K = 512;
    const auto w = random_weights(rng, N * K);
    const LinearScheme s = quantize("", "int4wo-" + std::to_string(group), w, N, K);
    const QuantizedTensor& t = s.weight;
    ASSERT_EQ(t.elem, ElemType::UInt4);
    ASSERT_EQ(t.zero_kind, ZeroKind::Float);
    ASSERT_EQ(t.group_size(), group);
    const auto deq = dequantize(t);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < K / group; ++g) {
        const auto i = size_t(n * (K / group) + g);
        float lo = w[size_t(n * K + g * group)], hi = lo;
        for (int64_t k = g * group; k < (g + 1) * group; ++k) {
          lo = std::min(lo, w[size_t(n * K + k)]);
          hi = std::max(hi, w[size_t(n * K + k)]);
        }
        const float scale = t.scales[i];
        EXPECT_EQ(scale, bf16_round(bf16_round(hi - lo) / 15.0f));
        // The tinygemm zero (float_zero + 8·scale) is a bf16 value near min + 8·scale.
        const float zero = t.float_zeros[i] + 8.0f * scale;
        EXPECT_EQ(zero, bf16_round(zero));
        EXPECT_EQ(zero, bf16_round(lo + 8.0f * scale));
        // Half a step, plus the bf16 roundings of x − min (2^-9 of 15 steps) and of its
        // quotient by the scale (2^-5 of a step), and of the zero and the minimum (2^-9 each).
        for (int64_t k = g * group; k < (g + 1) * group; ++k)
          EXPECT_LE(std::fabs(deq[size_t(n * K + k)] - w[size_t(n * K + k)]),
                    0.6f * scale + (std::fabs(zero) + std::fabs(lo)) * 0.0039f)
              << group;
      }
  }
  const auto m = parse_online_method("", "int4wo-128");
  EXPECT_TRUE(online_shape_problem(*m, 8, 192).has_value());
  EXPECT_FALSE(online_shape_problem(*m, 8, 256).has_value());
  expect_error([&] { quantize_online(*m, std::vector<float>(8 * 192, 0.5f), 8, 192); },
               "K=192 is not a multiple of its group size of 128");
}

TEST(QuantOnline, TorchaoFp8ScalesAreBf16AmaxOver448) {
  auto rng = fresh_rng();
  const int64_t N = 12, K = 64;
  const auto w = random_weights(rng, N * K);
  for (const char* name : {"fp8wo", "fp8dq-per_row", "fp8dq-per_tensor"}) {
    const LinearScheme s = quantize("", name, w, N, K);
    ASSERT_EQ(s.weight.elem, ElemType::Fp8E4M3);
    const bool per_tensor = std::string(name) == "fp8dq-per_tensor";
    EXPECT_EQ(s.weight.granularity(),
              per_tensor ? ScaleGranularity::PerTensor : ScaleGranularity::PerChannel);
    const auto deq = dequantize(s.weight);
    for (int64_t n = 0; n < N; ++n) {
      const float amax = per_tensor ? row_amax(w, 0, 0, N * K, N * K) : row_amax(w, n, 0, K, K);
      const float scale = s.weight.scales[per_tensor ? 0 : size_t(n)];
      EXPECT_EQ(scale, bf16_round(amax / 448.0f));
      for (int64_t k = 0; k < K; ++k) {
        const float x = w[size_t(n * K + k)];
        EXPECT_LE(std::fabs(deq[size_t(n * K + k)] - x),
                  std::max(std::fabs(x) * 0.0625f, scale * 0.001953125f) * 1.0001f);
      }
    }
  }
}

TEST(QuantOnline, BitsandbytesNf4BlocksOf64WithNestedAbsmax) {
  auto rng = fresh_rng();
  const int64_t N = 40, K = 128;  // 80 blocks: one nested block of 256
  const auto w = random_weights(rng, N * K);
  const LinearScheme s = quantize("bitsandbytes", "", w, N, K);
  const QuantizedTensor& t = s.weight;
  ASSERT_EQ(t.elem, ElemType::Nf4);
  ASSERT_EQ(t.group_size(), 64);
  float mean = 0, max_dev = 0;
  for (int64_t b = 0; b < N * K / 64; ++b) mean += row_amax(w, 0, b * 64, b * 64 + 64, 0);
  mean /= float(N * K / 64);
  for (int64_t b = 0; b < N * K / 64; ++b)
    max_dev = std::max(max_dev, std::fabs(row_amax(w, 0, b * 64, b * 64 + 64, 0) - mean));
  const auto deq = dequantize(t);
  for (int64_t b = 0; b < N * K / 64; ++b) {
    const float absmax = row_amax(w, 0, b * 64, b * 64 + 64, 0);
    // The nested 8-bit dynamic code is at worst 0.0071 apart near ±1 (half of 0.9 / 64).
    EXPECT_LE(std::fabs(t.scales[size_t(b)] - absmax), 0.0071f * max_dev + 1e-6f);
    // NF4's widest gap is between -1 and -0.696: at most 0.152 of the block's absmax away.
    for (int64_t i = b * 64; i < b * 64 + 64; ++i)
      EXPECT_LE(std::fabs(deq[size_t(i)] - w[size_t(i)]),
                0.153f * absmax + std::fabs(t.scales[size_t(b)] - absmax));
  }
  // Without nesting the scales are the absmax and every code is the nearest table entry.
  const QuantizedTensor plain = quantize_bnb_4bit(w, N, K, {false, 64, false});
  for (int64_t i = 0; i < N * K; ++i) {
    const float absmax = plain.scales[size_t(i / 64)];
    ASSERT_EQ(absmax, row_amax(w, 0, i / 64 * 64, i / 64 * 64 + 64, 0));
    const float x = w[size_t(i)] / absmax;
    const uint32_t code = get_code(plain, i / K, i % K);
    for (int c = 0; c < 16; ++c)
      ASSERT_LE(std::fabs(x - kNf4Values[code]), std::fabs(x - kNf4Values[c])) << i;
  }
}

TEST(QuantOnline, Int4IsRtnGroup128Asymmetric) {
  auto rng = fresh_rng();
  const int64_t N = 8, K = 256;
  const auto w = random_weights(rng, N * K);
  const LinearScheme s = quantize("int4", "", w, N, K);
  ASSERT_EQ(s.weight.elem, ElemType::UInt4);
  ASSERT_EQ(s.weight.zero_kind, ZeroKind::Integer);
  ASSERT_EQ(s.weight.group_size(), 128);
  const auto deq = dequantize(s.weight);
  for (int64_t i = 0; i < N * K; ++i) {
    const float scale = s.weight.scales[size_t(i / 128)];
    // (max − min)/15 with min ≤ 0 ≤ max and an integer zero: half a step, plus the zero's
    // rounding when it clamps, which needs min = 0 or max = 0 (not on random data).
    EXPECT_LE(std::fabs(deq[size_t(i)] - w[size_t(i)]), scale * 0.5001f);
  }
}

double rms_error(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += double(a[i] - b[i]) * double(a[i] - b[i]);
  return std::sqrt(sum / double(a.size()));
}

TEST(QuantOnline, GgufTypesAreRowsOfGgmlBlocks) {
  auto rng = fresh_rng();
  const int64_t N = 6, K = 512;
  const auto w = random_weights(rng, N * K);
  for (const auto& [name, type] :
       {std::pair{"q4_0", gguf::GgmlType::Q4_0}, std::pair{"q8_0", gguf::GgmlType::Q8_0},
        std::pair{"q4_k", gguf::GgmlType::Q4_K}}) {
    const LinearScheme s = quantize(name, "", w, N, K);
    ASSERT_EQ(s.weight.elem, ElemType::GgufBlock);
    ASSERT_EQ(s.weight.gguf_type, int(type));
    ASSERT_EQ(s.weight.row_bytes, int64_t(gguf::row_bytes(type, K)));
    if (type != gguf::GgmlType::Q4_K) {
      std::vector<uint8_t> expected(gguf::row_bytes(type, K));
      for (int64_t n = 0; n < N; ++n) {
        gguf::quantize_row(type, w.data() + n * K, expected.data(), K);
        ASSERT_EQ(0, std::memcmp(expected.data(), s.weight.codes.data() + n * s.weight.row_bytes,
                                 expected.size()));
      }
    }
  }
  expect_error(
      [&] { quantize_online(*parse_online_method("q4_0", ""), std::vector<float>(96), 2, 48); },
      "K=48 is not a multiple of its ggml block of 32");
}

// Q4_K: the blocks decode with the shared (gguf-py-exact) dequantizer, and the weighted fit
// is at least as good as Q4_1's plain min/max per 32 (5.0 vs 4.5 bits/weight) on Gaussian data.
TEST(QuantOnline, Q4KBeatsMinMaxAndDecodesConsistently) {
  auto rng = fresh_rng();
  const int64_t n = 256 * 64;
  std::vector<float> w(static_cast<size_t>(n));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& x : w) x = dist(rng);
  std::vector<uint8_t> q4k(size_t(n / 256 * 144)), q41(gguf::row_bytes(gguf::GgmlType::Q4_1, n));
  gguf::quantize_row_q4_k(w.data(), q4k.data(), n);
  gguf::quantize_row(gguf::GgmlType::Q4_1, w.data(), q41.data(), n);
  std::vector<float> d4k(static_cast<size_t>(n)), d41(static_cast<size_t>(n));
  gguf::dequantize_row(gguf::GgmlType::Q4_K, q4k.data(), d4k.data(), n);
  gguf::dequantize_row(gguf::GgmlType::Q4_1, q41.data(), d41.data(), n);
  const double e4k = rms_error(w, d4k), e41 = rms_error(w, d41);
  RecordProperty("q4_k_rmse", std::to_string(e4k));
  RecordProperty("q4_1_rmse", std::to_string(e41));
  // Unit Gaussian, 16384 values: Q4_K's RMS error measures 0.0717, Q4_1's 0.0787.
  EXPECT_LT(e4k, 0.075) << "q4_1 " << e41;
  EXPECT_LT(e4k, e41 * 0.95) << "q4_k " << e4k << " q4_1 " << e41;

  // Edge blocks: all zero, constant, one outlier: finite, and zero stays exactly zero.
  std::vector<float> edge(768, 0.0f);
  std::fill(edge.begin() + 256, edge.begin() + 512, 0.25f);
  edge[600] = 100.0f;
  std::vector<uint8_t> blocks(3 * 144);
  gguf::quantize_row_q4_k(edge.data(), blocks.data(), 768);
  std::vector<float> back(768);
  gguf::dequantize_row(gguf::GgmlType::Q4_K, blocks.data(), back.data(), 768);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(back[size_t(i)], 0.0f);
  for (int i = 256; i < 512; ++i) EXPECT_NEAR(back[size_t(i)], 0.25f, 0.25f * 0.02f);
  EXPECT_NEAR(back[600], 100.0f, 100.0f / 15.0f);
  expect_error([] { gguf::quantize_row_q4_k(nullptr, nullptr, 100); }, "256-element");
}

// --- bitsandbytes 4-bit loader -----------------------------------------------------------------

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// A bnb NF4 layer [N, K] with blocksize 64 and chosen codes; nested when `nested`.
void add_bnb_layer(MemoryCheckpoint& m, const std::string& p, int64_t N, int64_t K,
                   const std::vector<uint8_t>& codes, const std::vector<float>& absmax,
                   bool nested) {
  std::vector<uint8_t> packed(size_t(N * K / 2));
  for (size_t i = 0; i < packed.size(); ++i)
    packed[i] = uint8_t((codes[2 * i] << 4) | codes[2 * i + 1]);  // even element: high nibble
  m.add(p + ".weight", "U8", {N * K / 2, 1}, packed);
  m.add(p + ".weight.quant_map", "F32", {16}, std::vector<float>(kNf4Values, kNf4Values + 16));
  json state = {{"quant_type", "nf4"}, {"blocksize", 64}, {"dtype", "bfloat16"}, {"shape", {N, K}}};
  if (nested) {
    // Codes q of the absmax through a made-up nested map: absmax = map[q] · 2 + 0.5.
    std::vector<float> map(256);
    for (int i = 0; i < 256; ++i) map[size_t(i)] = float(i) / 255.0f;
    std::vector<uint8_t> q(absmax.size());
    for (size_t b = 0; b < q.size(); ++b) q[b] = uint8_t(b * 37 % 256);
    m.add(p + ".weight.absmax", "U8", {int64_t(q.size())}, q);
    m.add(p + ".weight.nested_absmax", "F32", {1}, std::vector<float>{2.0f});
    m.add(p + ".weight.nested_quant_map", "F32", {256}, map);
    state["nested_blocksize"] = 256;
    state["nested_offset"] = 0.5;
    state["nested_dtype"] = "float32";
  } else {
    m.add(p + ".weight.absmax", "F32", {int64_t(absmax.size())}, absmax);
  }
  m.add(p + ".weight.quant_state.bitsandbytes__nf4", "U8", {int64_t(state.dump().size())},
        bytes_of(state.dump()));
}

TEST(QuantBitsandbytes, Nf4LayerDecodesHighNibbleFirstWithAbsmaxScales) {
  auto rng = fresh_rng();
  const int64_t N = 4, K = 128;
  std::vector<uint8_t> codes(size_t(N * K));
  for (auto& c : codes) c = uint8_t(rng() & 15u);
  std::vector<float> absmax(size_t(N * K / 64));
  for (auto& a : absmax) a = 0.01f + float(rng() % 1000) / 1000.0f;
  for (bool nested : {false, true}) {
    MemoryCheckpoint m;
    add_bnb_layer(m, "l", N, K, codes, absmax, nested);
    ASSERT_TRUE(is_bnb_4bit_layer(m, "l"));
    EXPECT_EQ(bnb_4bit_shape(m, "l"), (std::vector<int64_t>{N, K}));
    const QuantizedTensor t = load_bnb_4bit(m, "l", {});
    const auto deq = dequantize(t);
    for (int64_t i = 0; i < N * K; ++i) {
      const size_t b = size_t(i / 64);
      const float scale = nested ? float(b * 37 % 256) / 255.0f * 2.0f + 0.5f : absmax[b];
      ASSERT_EQ(deq[size_t(i)], kNf4Values[codes[size_t(i)]] * scale) << i << " " << nested;
    }
  }
}

TEST(QuantBitsandbytes, RefusesWhatItCannotDecode) {
  const int64_t N = 2, K = 64;
  std::vector<uint8_t> codes(size_t(N * K), 3);
  std::vector<float> absmax(2, 1.0f);
  MemoryCheckpoint custom;
  add_bnb_layer(custom, "l", N, K, codes, absmax, false);
  // A quant_map that is not NF4 (adding a tensor under an existing name replaces it).
  MemoryCheckpoint m2;
  add_bnb_layer(m2, "l", N, K, codes, absmax, false);
  m2.add("l.weight.quant_map", "F32", {16}, std::vector<float>(16, 0.5f));
  expect_error([&] { load_bnb_4bit(m2, "l", {}); }, "a custom code table is not supported");
  expect_error([&] { load_bnb_4bit(custom, "l", {true}); },
               "is stored as nf4 but the config's bnb_4bit_quant_type is fp4");
  MemoryCheckpoint odd;
  add_bnb_layer(odd, "l", 2, 96, std::vector<uint8_t>(192, 1), std::vector<float>(3, 1.0f), false);
  expect_error([&] { load_bnb_4bit(odd, "l", {}); }, "K=96 is not a multiple of the blocksize 64");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "bitsandbytes"}, {"load_in_8bit", true}},
                                  "c");
      },
      "load_in_8bit (LLM.int8 with fp16 outliers) is not supported");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "bitsandbytes"}}, "c");
      },
      "neither load_in_4bit nor load_in_8bit");
}

TEST(QuantBitsandbytes, AdapterHidesQuantStateAndSkipsModules) {
  auto m = std::make_shared<MemoryCheckpoint>();
  std::vector<uint8_t> codes(8 * 64, 9);
  add_bnb_layer(*m, "model.layers.0.mlp.up_proj", 8, 64, codes, std::vector<float>(8, 2.0f), true);
  m->add("model.layers.0.mlp.down_proj.weight", "F32", {4, 4}, std::vector<float>(16, 1.0f));
  m->add("lm_head.weight", "F32", {4, 4}, std::vector<float>(16, 1.0f));
  const json cfg = {{"quant_method", "bitsandbytes"},
                    {"load_in_4bit", true},
                    {"bnb_4bit_quant_type", "nf4"},
                    {"llm_int8_skip_modules", {"down_proj"}}};
  QuantizedCheckpoint q(m, parse_quantization_config(cfg, "c"));
  EXPECT_EQ(q.quantized_modules(), (std::vector<std::string>{"model.layers.0.mlp.up_proj"}));
  ASSERT_NE(q.find("model.layers.0.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(q.find("model.layers.0.mlp.up_proj.weight")->shape, (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(q.find("model.layers.0.mlp.up_proj.weight.absmax"), nullptr);
  EXPECT_EQ(q.find("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"), nullptr);
  EXPECT_EQ(q.tensors().size(), 3u);
  const auto w = q.load_f32("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(w[0], kNf4Values[9] * (0.0f / 255.0f * 2.0f + 0.5f));
  EXPECT_EQ(q.linear_scheme("model.layers.0.mlp.up_proj.weight")->method, "bitsandbytes");
}

}  // namespace
}  // namespace nibble::quant
