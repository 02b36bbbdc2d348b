// Resolution rules (one test per rule, each refusal's message) and loader edge cases on an
// in-memory checkpoint.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/memory_checkpoint.h"
#include "quant/formats/loaders.h"
#include "quant/quantized_checkpoint.h"
#include "quant/reference/dequantize.h"
#include "quant/resolve.h"

namespace nibble::quant {
namespace {

using nlohmann::json;

// Expects an Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A 4-bit GPTQ layer [N=8, K=32], group 32, with every qzeros field = `zero_field`.
void add_gptq_layer(MemoryCheckpoint& m, const std::string& p, uint32_t zero_field) {
  std::vector<uint32_t> qweight(4 * 8, 0x76543210u);
  uint32_t zeros = 0;
  for (int i = 0; i < 8; ++i) zeros |= zero_field << (4 * i);
  m.add<uint32_t>(p + ".qweight", "I32", {4, 8}, qweight);
  m.add<uint32_t>(p + ".qzeros", "I32", {1, 1}, {zeros});
  m.add<float>(p + ".scales", "F32", {1, 8}, std::vector<float>(8, 0.5f));
  m.add<int32_t>(p + ".g_idx", "I32", {32}, std::vector<int32_t>(32, 0));
}

TEST(QuantResolve, DetectsEachMethodFromQuantMethod) {
  EXPECT_EQ(parse_quantization_config(json{{"quant_method", "gptq"}, {"bits", 4}}, "c").method,
            "gptq");
  EXPECT_EQ(
      parse_quantization_config(json{{"quant_method", "AWQ"}, {"version", "GEMM"}}, "c").method,
      "awq");
  EXPECT_EQ(parse_quantization_config(
                json{{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}}, "c")
                .method,
            "fp8");
  EXPECT_EQ(parse_quantization_config(json{{"quant_method", "fbgemm_fp8"}}, "c").method,
            "fbgemm_fp8");
  // No quant_method, or "modelopt": ModelOpt's flat form, method from quant_algo.
  EXPECT_EQ(parse_quantization_config(json{{"quant_algo", "FP8"}}, "c").method, "modelopt_fp8");
  EXPECT_EQ(
      parse_quantization_config(json{{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}}, "c")
          .method,
      "modelopt_fp4");
}

TEST(QuantResolve, RefusesUnsupportedParts) {
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "hqq"}}, "cfg");
      },
      "unknown quant_method 'hqq'");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "awq"}, {"version", "gemv"}}, "cfg");
      },
      "AWQ version 'gemv' is not supported");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "gptq"}, {"checkpoint_format", "marlin"}},
                                  "cfg");
      },
      "checkpoint_format 'marlin'");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "gptq"}, {"bits", 5}}, "cfg");
      },
      "bits=5 is not supported");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_method", "fp8"},
                                       {"activation_scheme", "static"},
                                       {"weight_block_size", {128, 128}}},
                                  "cfg");
      },
      "needs activation_scheme 'dynamic'");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_algo", "MIXED_PRECISION"}}, "cfg");
      },
      "MIXED_PRECISION");
  expect_error(
      [] {
        parse_quantization_config(json{{"quant_algo", "W4A8_AWQ"}}, "cfg");
      },
      "quant_algo 'W4A8_AWQ' is not supported");
  const json ct_group = {{"targets", {"Linear"}},
                         {"weights", {{"num_bits", 8}, {"type", "int"}, {"strategy", "channel"}}}};
  json ct = {{"quant_method", "compressed-tensors"},
             {"format", "int-quantized"},
             {"config_groups", {{"group_0", ct_group}}}};
  EXPECT_NO_THROW(parse_quantization_config(ct, "cfg"));
  json sparse = ct;
  sparse["sparsity_config"] = {{"format", "sparse-24-bitmask"}};
  expect_error([&] { parse_quantization_config(sparse, "cfg"); },
               "sparsity_config format 'sparse-24-bitmask'");
  json rotated = ct;
  rotated["transform_config"] = {{"config_groups", {{"u", {{"type", "hadamard"}}}}}};
  expect_error([&] { parse_quantization_config(rotated, "cfg"); }, "transform_config is set");
  json nvfp4 = ct;
  nvfp4["format"] = "nvfp4-pack-quantized";
  expect_error([&] { parse_quantization_config(nvfp4, "cfg"); },
               "format 'nvfp4-pack-quantized' is not supported");
}

TEST(QuantResolve, UserQuantizationFollowsSglangRules) {
  const QuantConfig gptq = parse_quantization_config(json{{"quant_method", "gptq"}}, "c");
  // No flag, "unquant", the same method, or the Marlin upgrade: accepted.
  EXPECT_EQ(apply_user_quantization(gptq, "")->method, "gptq");
  EXPECT_EQ(apply_user_quantization(gptq, "unquant")->method, "gptq");
  EXPECT_EQ(apply_user_quantization(gptq, "gptq")->method, "gptq");
  EXPECT_EQ(apply_user_quantization(gptq, "gptq_marlin")->method, "gptq");
  expect_error([&] { apply_user_quantization(gptq, "fp8"); },
               "Quantization method specified in the model config (gptq) does not match the "
               "quantization method specified in the quantization argument (fp8)");
  expect_error([&] { apply_user_quantization(gptq, "int5"); },
               "unknown quantization method 'int5'");
  // An unquantized checkpoint: online methods resolve to "no checkpoint config" (the caller
  // quantizes at load, quant/online.h); offline-only methods are refused.
  EXPECT_FALSE(apply_user_quantization(std::nullopt, "fp8").has_value());
  expect_error([] { apply_user_quantization(std::nullopt, "awq"); }, "not an online method");
  EXPECT_FALSE(apply_user_quantization(std::nullopt, "").has_value());

  const QuantConfig mo = parse_quantization_config(json{{"quant_algo", "FP8"}}, "c");
  EXPECT_EQ(apply_user_quantization(mo, "modelopt")->method, "modelopt_fp8");
  expect_error([&] { apply_user_quantization(mo, "modelopt_fp4"); },
               "(modelopt_fp8) does not match");

  const json w8a8_int8 = {
      {"quant_method", "compressed-tensors"},
      {"format", "int-quantized"},
      {"config_groups",
       {{"g",
         {{"targets", {"Linear"}},
          {"weights", {{"num_bits", 8}, {"type", "int"}, {"strategy", "channel"}}}}}}}};
  const QuantConfig ct = parse_quantization_config(w8a8_int8, "c");
  EXPECT_EQ(apply_user_quantization(ct, "w8a8_int8")->method, "w8a8_int8");
  expect_error([&] { apply_user_quantization(ct, "w8a8_fp8"); }, "not fp8 W8A8 weights");
}

TEST(QuantResolve, LayerPlansHonourIgnoreListsAndLmHead) {
  json ct = {
      {"quant_method", "compressed-tensors"},
      {"format", "pack-quantized"},
      {"ignore", {"lm_head", "re:.*layers\\.1\\.mlp\\..*"}},
      {"config_groups",
       {{"g",
         {{"targets",
           {"re:.*self_attn.*", "model.layers.1.mlp.up_proj", "model.layers.0.mlp.down_proj"}},
          {"weights", {{"num_bits", 4}, {"group_size", 32}}}}}}}};
  const QuantConfig c = parse_quantization_config(ct, "c");
  EXPECT_EQ(plan_layer(c, "model.layers.0.self_attn.q_proj").format, LayerFormat::CtPacked);
  EXPECT_EQ(plan_layer(c, "model.layers.0.self_attn.q_proj").ct.strategy, "group");
  EXPECT_EQ(plan_layer(c, "model.layers.0.mlp.down_proj").format, LayerFormat::CtPacked);
  EXPECT_EQ(plan_layer(c, "model.layers.0.mlp.up_proj").format, LayerFormat::Dense);  // no target
  EXPECT_EQ(plan_layer(c, "model.layers.1.mlp.up_proj").format, LayerFormat::Dense);  // ignored
  EXPECT_EQ(plan_layer(c, "lm_head").format, LayerFormat::Dense);

  const QuantConfig fp8 = parse_quantization_config(
      json{{"quant_method", "fp8"}, {"modules_to_not_convert", {"model.layers.0.mlp", "lm_head"}}},
      "c");
  EXPECT_EQ(plan_layer(fp8, "model.layers.0.mlp.up_proj").format, LayerFormat::Dense);
  EXPECT_EQ(plan_layer(fp8, "model.layers.1.mlp.up_proj").format, LayerFormat::Fp8);
  EXPECT_EQ(plan_layer(fp8, "model.layers.1.mlp.up_proj").act.kind,
            ActQuantKind::DynamicPerTokenFp8);

  const QuantConfig mo = parse_quantization_config(
      json{{"quantization",
            {{"quant_algo", "NVFP4"},
             {"exclude_modules", {"model.layers.1.self_attn*", "lm_head"}}}}},
      "c");
  EXPECT_EQ(plan_layer(mo, "model.layers.1.self_attn.o_proj").format, LayerFormat::Dense);
  EXPECT_EQ(plan_layer(mo, "model.layers.0.self_attn.o_proj").format, LayerFormat::Nvfp4);
  EXPECT_EQ(plan_layer(mo, "lm_head").format, LayerFormat::Dense);

  const QuantConfig awq = parse_quantization_config(
      json{{"quant_method", "awq"}, {"modules_to_not_convert", {"gate_proj"}}}, "c");
  EXPECT_EQ(plan_layer(awq, "model.layers.3.mlp.gate_proj").format, LayerFormat::Dense);
  EXPECT_EQ(plan_layer(awq, "model.layers.3.mlp.up_proj").format, LayerFormat::Awq);

  const QuantConfig gptq =
      parse_quantization_config(json{{"quant_method", "gptq"}, {"lm_head", false}}, "c");
  EXPECT_EQ(plan_layer(gptq, "lm_head").format, LayerFormat::Dense);
  EXPECT_EQ(
      plan_layer(parse_quantization_config(json{{"quant_method", "gptq"}, {"lm_head", true}}, "c"),
                 "lm_head")
          .format,
      LayerFormat::Gptq);
}

TEST(QuantLoaders, GptqV1ZeroUnderflowIsRefused) {
  MemoryCheckpoint m;
  add_gptq_layer(m, "l", 0xF);  // all-ones field in v1: z - 1 = -1 was ORed in
  expect_error([&] { load_gptq(m, "l", {4, 32, false, false, false}); }, "underflowed");
  // The same field in gptq_v2 is a legitimate zero point of 15.
  const QuantizedTensor t = load_gptq(m, "l", {4, 32, false, false, true});
  EXPECT_EQ(t.int_zeros[0], 15);
  // qweight nibbles 0..7 along K: W[n][k] = (k % 8 - 15) * 0.5.
  const auto w = dequantize(t);
  EXPECT_EQ(w[3], (3.0f - 15.0f) * 0.5f);
}

TEST(QuantLoaders, GptqSymmetricBecomesSignedAndChecksShapes) {
  MemoryCheckpoint m;
  add_gptq_layer(m, "l", 0x7);  // v1 sym: z = 8
  const QuantizedTensor t = load_gptq(m, "l", {4, 32, true, false, false});
  EXPECT_EQ(t.elem, ElemType::Int4);
  EXPECT_EQ(dequantize(t)[9], (1.0f - 8.0f) * 0.5f);
  // Declared group size that does not match the scales.
  expect_error(
      [&] {
        load_gptq(m, "l", {4, 16, true, false, false});
      },
      "scales' has shape [1, 8], expected [2, 8]");
  expect_error(
      [&] {
        load_gptq(m, "missing", {4, 32, true, false, false});
      },
      "missing tensor 'missing.qweight'");
  // 3-bit needs K and N multiples of 32.
  expect_error(
      [&] {
        load_gptq(m, "l", {3, 32, true, false, false});
      },
      "qweight shape [4, 8] is not [K");
}

TEST(QuantLoaders, AwqGemvShapedTensorsAreRefused) {
  MemoryCheckpoint m;
  // GEMV layout of an [N=8, K=32] layer: qweight [N, K/8], scales [N, groups·8].
  m.add<uint32_t>("l.qweight", "I32", {8, 4}, std::vector<uint32_t>(32, 0));
  m.add<uint32_t>("l.qzeros", "I32", {8, 1}, std::vector<uint32_t>(8, 0));
  m.add<float>("l.scales", "F32", {8, 8}, std::vector<float>(64, 1.0f));
  expect_error([&] { load_awq(m, "l", {4, 32}); }, "GEMV-layout checkpoint");
}

TEST(QuantLoaders, AwqInterleaveDecodesColumnsInOrder) {
  MemoryCheckpoint m;
  // Slot i holds column [0,2,4,6,1,3,5,7][i]: put column c's value c into its slot.
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  uint32_t word = 0;
  for (int i = 0; i < 8; ++i) word |= uint32_t(order[i]) << (4 * i);
  m.add<uint32_t>("l.qweight", "I32", {32, 1}, std::vector<uint32_t>(32, word));
  m.add<uint32_t>("l.qzeros", "I32", {1, 1}, {0u});
  m.add<float>("l.scales", "F32", {1, 8}, std::vector<float>(8, 1.0f));
  const auto w = dequantize(load_awq(m, "l", {4, -1}));
  for (int n = 0; n < 8; ++n) EXPECT_EQ(w[size_t(n * 32)], float(n));
}

TEST(QuantLoaders, AdapterPresentsDenseWeightAndHidesStorage) {
  auto m = std::make_shared<MemoryCheckpoint>();
  add_gptq_layer(*m, "model.layers.0.self_attn.q_proj", 0x7);
  m->add<float>("model.norm.weight", "F32", {8}, std::vector<float>(8, 1.0f));
  m->add<float>("model.layers.0.self_attn.k_scale", "F32", {1}, {1.0f});
  QuantizedCheckpoint q(
      m, parse_quantization_config(json{{"quant_method", "gptq"}, {"group_size", 32}}, "c"));
  ASSERT_NE(q.find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(q.find("model.layers.0.self_attn.q_proj.weight")->shape, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ(q.find("model.layers.0.self_attn.q_proj.qweight"), nullptr);
  EXPECT_EQ(q.find("model.layers.0.self_attn.q_proj.g_idx"), nullptr);
  EXPECT_EQ(q.find("model.layers.0.self_attn.k_scale"), nullptr);
  ASSERT_NE(q.find("model.norm.weight"), nullptr);
  EXPECT_EQ(q.tensors().size(), 2u);
  EXPECT_EQ(q.load_f32("model.layers.0.self_attn.q_proj.weight").size(), 256u);

  // A config that excludes a layer whose tensors are quantized: refused, naming the layer.
  expect_error(
      [&] {
        QuantizedCheckpoint(
            m, parse_quantization_config(
                   json{{"quant_method", "gptq"}, {"dynamic", {{"-:.*q_proj", json::object()}}}},
                   "c"));
      },
      "'model.layers.0.self_attn.q_proj' stores qweight/qzeros/scales but the gptq config");
  // A compressed-tensors config over GPTQ tensors: refused.
  expect_error(
      [&] {
        QuantizedCheckpoint(
            m, parse_quantization_config(
                   json{{"quant_method", "compressed-tensors"},
                        {"format", "pack-quantized"},
                        {"config_groups",
                         {{"g", {{"targets", {"Linear"}}, {"weights", {{"num_bits", 4}}}}}}}},
                   "c"));
      },
      "says layer 'model.layers.0.self_attn.q_proj' is pack-quantized");
}

}  // namespace
}  // namespace nibble::quant
