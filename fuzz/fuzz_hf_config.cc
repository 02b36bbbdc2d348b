// config.json and the quantization descriptions a checkpoint directory carries: parse_hf_config
// (with the round trip through hf_config_to_json), the quantization_config found where
// read_checkpoint_quantization looks for it (top level, text_config, compression_config),
// the --quantization rules on top, and the per-layer plan for typical module paths, which
// runs the checkpoint's regexes and glob patterns. A second part after a NUL byte is read as
// generation_config.json and as a sidecar file (quantize_config.json, hf_quant_config.json).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/error.h"
#include "formats/hf/generation_config.h"
#include "formats/hf/hf_config.h"
#include "fuzz_common.h"
#include "quant/resolve.h"

namespace {

using nlohmann::json;

template <typename Fn>
void expect_error_or_value(Fn&& fn) {
  try {
    fn();
  } catch (const nibble::Error&) {
  }
}

void plan_layers(const nibble::quant::QuantConfig& config) {
  static const char* const kModules[] = {
      "model.layers.0.self_attn.q_proj",
      "model.layers.0.self_attn.k_proj",
      "model.layers.1.mlp.gate_proj",
      "model.layers.31.mlp.down_proj",
      "lm_head",
      "model.layers.7.self_attn.o_proj",
  };
  for (const char* module : kModules) {
    expect_error_or_value([&] { (void)nibble::quant::plan_layer(config, module); });
  }
}

void quantization(const json& value, const std::string& source) {
  std::optional<nibble::quant::QuantConfig> detected;
  expect_error_or_value(
      [&] { detected = nibble::quant::parse_quantization_config(value, source); });
  if (!detected) return;
  plan_layers(*detected);
  for (const char* user : {"", "fp8", "w8a8_int8", "gptq_marlin", "awq"}) {
    expect_error_or_value([&] {
      const auto resolved = nibble::quant::apply_user_quantization(detected, user);
      if (resolved) plan_layers(*resolved);
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [config_text, side_text] =
      nibble::fuzz::split_at_nul(nibble::fuzz::as_text(data, size));
  if (const auto config = nibble::fuzz::parse_json(config_text)) {
    expect_error_or_value([&] {
      const nibble::ModelConfig parsed = nibble::parse_hf_config(*config, "config.json");
      const json written = nibble::hf_config_to_json(parsed);
      (void)nibble::parse_hf_config(written, "written config.json");
    });
    if (config->is_object()) {
      // The order read_checkpoint_quantization uses.
      if (config->contains("quantization_config")) {
        quantization((*config)["quantization_config"], "config.json quantization_config");
      } else if (config->contains("text_config") && (*config)["text_config"].is_object() &&
                 (*config)["text_config"].contains("quantization_config")) {
        quantization((*config)["text_config"]["quantization_config"],
                     "config.json text_config.quantization_config");
      } else if (config->contains("compression_config") &&
                 !(*config)["compression_config"].is_null()) {
        json cc = (*config)["compression_config"];
        if (cc.is_object() && !cc.contains("quant_method"))
          cc["quant_method"] = "compressed-tensors";
        quantization(cc, "config.json compression_config");
      }
    }
  }
  if (const auto side = nibble::fuzz::parse_json(side_text)) {
    expect_error_or_value(
        [&] { (void)nibble::parse_generation_config(*side, "generation_config.json"); });
    quantization(*side, "quantize_config.json");
  }
  return 0;
}
