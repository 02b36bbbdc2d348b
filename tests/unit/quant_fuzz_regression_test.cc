// quantization_config inputs the config fuzzer (fuzz/fuzz_hf_config.cc) found to escape as
// nlohmann::json::type_error (or an assert, or std::invalid_argument) instead of an
// nibble::Error naming the field.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace nibble::quant
