// quantization_config inputs the config fuzzer (fuzz/fuzz_hf_config.cc) found to escape as
// nlohmann::json::type_error (or an assert, or std::invalid_argument) instead of an
// nibble::Error naming the field.
#include <gtest/gtest.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/resolve.h"

namespace nibble::quant {
namespace {

using nlohmann::json;

TEST(QuantFuzzRegression, NonStringQuantMethodIsAnError) {
  for (const json& method : {json(true), json(4), json::array(), json(nullptr)}) {
    try {
      parse_quantization_config({{"quant_method", method}}, "config.json");
      ADD_FAILURE() << "accepted quant_method " << method.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("quant_method"), std::string::npos) << e.what();
    }
  }
}

TEST(QuantFuzzRegression, NonStringSparsityFormatIsAnError) {
  const json config = {{"quant_method", "compressed-tensors"},
                       {"format", "pack-quantized"},
                       {"quantization_status", "compressed"},
                       {"sparsity_config", {{"format", 7}}},
                       {"config_groups", json::object()}};
  EXPECT_THROW(parse_quantization_config(config, "config.json"), Error);
}

json block_config(const json& weights) {
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", weights}}}}}};
}

// Found by fuzz_hf_config (2026-11-27): strategy "block" without block_structure read the
// missing key through const operator[], which asserts (undefined behaviour under NDEBUG).
TEST(QuantFuzzRegression, BlockStrategyWithoutBlockStructureIsAnError) {
  const json weights = {{"num_bits", 4},
                        {"type", "int"},
                        {"symmetric", true},
                        {"strategy", "block"},
                        {"group_size", 128}};
  try {
    parse_quantization_config(block_config(weights), "config.json");
    ADD_FAILURE() << "accepted strategy 'block' without block_structure";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block_structure"), std::string::npos) << e.what();
  }
}

TEST(QuantFuzzRegression, MalformedBlockStructureStringIsAnError) {
  for (const char* bad :
       {"x", "128x", "x128", "axb", "99999999999999999999x1", "12 x 4", "-128x128", "0x0"}) {
    const json weights = {
        {"num_bits", 8}, {"type", "float"}, {"strategy", "block"}, {"block_structure", bad}};
    EXPECT_THROW(parse_quantization_config(block_config(weights), "config.json"), Error) << bad;
  }
}

// Found by fuzz_hf_config (2026-11-27): a GPTQ `dynamic` pattern with nested quantifiers
// (".**layestatic") made std::regex backtrack for minutes on a module path. Patterns now go
// through PCRE2, which refuses a repeated quantifier as Python's re does, and matches with a
// limit: a pattern that backtracks exponentially either matches quickly or is an Error.
TEST(QuantFuzzRegression, BacktrackingDynamicPatternDoesNotHang) {
  auto gptq = [](const std::string& pattern) {
    return json{{"quant_method", "gptq"},
                {"bits", 4},
                {"group_size", 128},
                {"desc_act", true},
                {"sym", true},
                {"dynamic", {{"-:.*down_proj.*", json::object()}, {pattern, {{"bits", 8}}}}}};
  };
  EXPECT_THROW(parse_quantization_config(gptq("+:.**layestatic\\..*"), "config.json"), Error);
  const QuantConfig parsed = parse_quantization_config(gptq("+:(a*)*b"), "config.json");
  const auto start = std::chrono::steady_clock::now();
  for (const char* module : {"model.layers.0.self_attn.q_proj", "model.layers.7.mlp.down_proj",
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac"}) {
    try {
      (void)plan_layer(parsed, module);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(QuantFuzzRegression, InvalidDynamicPatternIsAnError) {
  const json config = {{"quant_method", "gptq"},
                       {"bits", 4},
                       {"group_size", 128},
                       {"dynamic", {{"+:model.(layers", {{"bits", 8}}}}}};
  try {
    parse_quantization_config(config, "config.json");
    ADD_FAILURE() << "accepted an unbalanced parenthesis";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid regular expression"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace nibble::quant
