// `nibble quant ...`: developer tools for pre-quantized checkpoints, used by
// tests/python/test_quant_formats.py to compare nibble's loaders with the producing libraries.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "formats/hf/hf_checkpoint.h"
#include "formats/npy.h"
#include "quant/quantized_checkpoint.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cli {
namespace {

struct QuantArgs {
  std::string input;
  std::string output;
  std::string quantization;
};

std::shared_ptr<quant::QuantizedCheckpoint> open_quantized(const QuantArgs& args) {
  auto wrapped = quant::wrap_quantized_checkpoint(open_hf_checkpoint(args.input), args.input,
                                                  args.quantization);
  auto quantized = std::dynamic_pointer_cast<quant::QuantizedCheckpoint>(wrapped);
  if (!quantized) fail("{}: not a quantized checkpoint (no quantization config found)", args.input);
  return quantized;
}

std::string_view act_name(quant::ActQuantKind kind) {
  using quant::ActQuantKind;
  switch (kind) {
    case ActQuantKind::None: return "none";
    case ActQuantKind::DynamicPerTokenInt8: return "dynamic_per_token_int8";
    case ActQuantKind::DynamicPerTokenFp8: return "dynamic_per_token_fp8";
    case ActQuantKind::DynamicPerTokenGroupFp8: return "dynamic_per_token_group_fp8";
    case ActQuantKind::StaticPerTensorInt8: return "static_per_tensor_int8";
    case ActQuantKind::StaticPerTensorFp8: return "static_per_tensor_fp8";
    case ActQuantKind::Nvfp4: return "nvfp4";
  }
  return "?";
}

// Every quantized layer: its canonical form, as JSON.
int run_info(const QuantArgs& args) {
  const auto ckpt = open_quantized(args);
  nlohmann::ordered_json out;
  out["method"] = ckpt->config().method;
  out["checkpoint_method"] = ckpt->config().checkpoint_method;
  out["source"] = ckpt->config().source;
  out["layers"] = nlohmann::ordered_json::array();
  for (const auto& module : ckpt->quantized_modules()) {
    const auto scheme = ckpt->linear_scheme(module + ".weight");
    const quant::QuantizedTensor& w = scheme->weight;
    out["layers"].push_back({{"module", module},
                             {"elem", quant::elem_name(w.elem)},
                             {"shape", {w.rows, w.cols}},
                             {"granularity", quant::granularity_name(w.granularity())},
                             {"scale_block", {w.scale_block_rows, w.scale_block_cols}},
                             {"scale_dtype", quant::scale_dtype_name(w.scale_dtype)},
                             {"zeros", w.zero_kind == quant::ZeroKind::Integer ? "int"
                                       : w.zero_kind == quant::ZeroKind::Float ? "float"
                                                                               : "none"},
                             {"act_order", !w.g_idx.empty()},
                             {"act", act_name(scheme->act.kind)}});
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

// <module>.weight.npy (f32 [N, K]) for every quantized layer.
int run_dequant(const QuantArgs& args) {
  const auto ckpt = open_quantized(args);
  std::filesystem::create_directories(args.output);
  for (const auto& module : ckpt->quantized_modules()) {
    const std::string name = module + ".weight";
    const std::vector<float> values = ckpt->load_f32(name);
    write_npy_f32(std::filesystem::path(args.output) / (name + ".npy"), values,
                  ckpt->find(name)->shape);
  }
  std::printf("%zu layers\n", ckpt->quantized_modules().size());
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  app.description("inspect and dequantize pre-quantized checkpoints (developer tool)");
  app.require_subcommand(1);
  auto args = std::make_shared<QuantArgs>();
  auto* info = app.add_subcommand("info", "print each quantized layer's canonical form as JSON");
  info->add_option("dir", args->input, "checkpoint directory")->required();
  auto* dequant = app.add_subcommand(
      "dequant", "write <module>.weight.npy (f32) for every quantized layer into OUTDIR");
  dequant->add_option("dir", args->input, "checkpoint directory")->required();
  dequant->add_option("outdir", args->output, "output directory")->required();
  for (auto* sub : {info, dequant})
    sub->add_option("--quantization", args->quantization,
                    "as sglang --quantization: must agree with the checkpoint's method");
  return [args, info, dequant]() {
    if (info->parsed()) return run_info(*args);
    if (dequant->parsed()) return run_dequant(*args);
    return 1;
  };
}

}  // namespace

NIBBLE_COMMAND(quant, setup);

}  // namespace nibble::cli
