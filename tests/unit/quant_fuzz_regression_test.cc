// quantization_config inputs the config fuzzer (fuzz/fuzz_hf_config.cc) found to escape as
// nlohmann::json::type_error instead of an nibble::Error naming the field.
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

}  // namespace
}  // namespace nibble::quant
