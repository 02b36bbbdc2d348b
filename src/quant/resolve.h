#pragma once
// Which quantization a checkpoint directory carries, and which scheme each linear layer gets,
// following SGLang's resolution rules (shared reference sglang-quantization.md §2):
//  1. config.json "quantization_config" (also under "text_config"); a config without
//     quant_method, or with "modelopt", is ModelOpt's flat form;
//  2. config.json "compression_config" (legacy compressed-tensors);
//  3. hf_quant_config.json (ModelOpt);
//  4. quantize_config.json (GPTQ, or AWQ when it says so) / quant_config.json (AWQ).
// `--quantization` may only restate the checkpoint's method or name a compatible one; any
// other value fails with SGLang's message (online methods apply to unquantized checkpoints). Parts
// nibble cannot run correctly (sparsity, transforms, AWQ GEMV, serialized Marlin, ...) are refused
// with the reason.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/module_regex.h"
#include "formats/checkpoint.h"
#include "quant/formats/loaders.h"
#include "quant/scheme.h"

namespace nibble::quant {

// One GPTQModel `dynamic` rule: a regex on the module path, negative ("-:") or an override.
struct GptqDynamicRule {
  std::string pattern;
  std::optional<ModuleRegex> regex;  // set for every parsed rule
  bool exclude = false;
  std::optional<int> bits;
  std::optional<int64_t> group_size;
  std::optional<bool> sym, desc_act;
};

struct GptqConfig {
  GptqParams params;
  bool lm_head = false;
  std::vector<GptqDynamicRule> dynamic;
  std::vector<std::string> modules_in_block;  // empty: every linear of a block
};

struct AwqConfig {
  AwqParams params;
  std::vector<std::string> modules_to_not_convert;  // substring match
};

// A compressed-tensors target or ignore entry: exact module path, class name, or "re:" regex.
struct ModuleMatcher {
  std::string text;
  std::optional<ModuleRegex> regex;
  bool matches(const std::string& module) const;
};

struct CtGroup {
  std::string name;
  std::vector<ModuleMatcher> targets;
  std::string format;  // pack-quantized, int-quantized, float-quantized, naive-quantized
  CtWeightArgs weights;
  ActQuant act;
};

struct CtConfig {
  std::vector<CtGroup> groups;
  std::vector<ModuleMatcher> ignore;
  bool kv_cache_fp8 = false;  // kv_cache_scheme float 8-bit (scales read, cache kept in bf16)
};

struct Fp8Config {
  bool static_activations = false;         // activation_scheme "static"
  int64_t block_rows = 0, block_cols = 0;  // weight_block_size
  std::vector<std::string> ignored;        // ignored_layers + modules_to_not_convert
  bool per_channel = false;                // fbgemm_fp8
};

struct ModelOptConfig {
  std::string quant_algo;  // FP8, FP8_PER_CHANNEL_PER_TOKEN, NVFP4, W4A16_NVFP4
  std::string kv_cache_quant_algo;
  std::vector<std::string> exclude_modules;  // fnmatch patterns (ignore list in the flat form)
};

struct BnbConfig {
  BnbParams params;
  bool double_quant = false;              // bnb_4bit_use_double_quant
  std::vector<std::string> skip_modules;  // llm_int8_skip_modules (substring match)
};

struct QuantConfig {
  // SGLang's name of the resolved method: gptq, awq, compressed-tensors, fp8, fbgemm_fp8,
  // modelopt_fp8, modelopt_fp4, or (with --quantization on a compressed-tensors checkpoint)
  // w8a8_int8 / w8a8_fp8.
  std::string method;
  std::string checkpoint_method;  // as detected from the checkpoint
  std::string source;             // where it was read, for messages
  GptqConfig gptq;
  AwqConfig awq;
  CtConfig ct;
  Fp8Config fp8;
  ModelOptConfig modelopt;
  BnbConfig bnb;
};

// Every --quantization value SGLang accepts (server_args.py QUANTIZATION_CHOICES).
const std::vector<std::string>& quantization_choices();

// Parses the checkpoint's quantization description (nullopt: an unquantized checkpoint).
std::optional<QuantConfig> read_checkpoint_quantization(const std::filesystem::path& dir);

// modelopt_fp8 / modelopt_fp4: on an unquantized checkpoint, SGLang's ModelOpt quantize-and-serve
// (calibrate, quantize, then serve; quantize/quantize_and_serve.h). On a ModelOpt checkpoint they
// restate its method like any other.
bool is_calibrated_method(const std::string& method);

// read_checkpoint_quantization plus the --quantization rules. An empty `user_method` (or
// "unquant") means "use what the checkpoint says". On an unquantized checkpoint, an online
// method (quant/online.h: fp8, w8a8_fp8, w8a8_int8, bitsandbytes, int4, q4_0, q4_k, q8_0)
// returns nullopt: the caller then quantizes at load with parse_online_method(); so does a
// calibrated method (is_calibrated_method), which the caller calibrates first; any other
// method is refused (it needs a checkpoint quantized with it). On a pre-quantized checkpoint
// SGLang's rules hold whatever the method: the same method is a no-op, a compatible one
// (w8a8_* on compressed-tensors, modelopt, the Marlin aliases) is applied, anything else is
// refused. `torchao_config` (--torchao-config) needs an unquantized checkpoint.
std::optional<QuantConfig> resolve_quantization(const std::filesystem::path& dir,
                                                const std::string& user_method,
                                                const std::string& torchao_config = "");

// The same rules on already-parsed inputs (testable without files).
std::optional<QuantConfig> apply_user_quantization(std::optional<QuantConfig> detected,
                                                   const std::string& user_method,
                                                   const std::string& torchao_config = "");
QuantConfig parse_quantization_config(const nlohmann::json& config, const std::string& source);

// How one linear module (e.g. "model.layers.0.self_attn.q_proj") is stored.
enum class LayerFormat : uint8_t {
  Dense,  // not quantized
  Gptq,
  Awq,
  CtPacked,    // compressed-tensors pack-quantized
  CtUnpacked,  // compressed-tensors int-/float-/naive-quantized
  Fp8,         // fp8 / fbgemm_fp8 / modelopt_fp8
  Nvfp4,       // modelopt_fp4
  Bnb4,        // bitsandbytes 4-bit (NF4 / FP4)
};

struct LayerPlan {
  LayerFormat format = LayerFormat::Dense;
  GptqParams gptq;
  AwqParams awq;
  CtWeightArgs ct;
  BnbParams bnb;
  std::string fp8_scale_suffix;  // weight_scale or weight_scale_inv
  int64_t block_rows = 0, block_cols = 0;
  ActQuant act;
};

LayerPlan plan_layer(const QuantConfig& config, const std::string& module);

// Loads the layer's QuantizedTensor and activation scheme; `plan` must not be Dense.
LinearScheme load_linear(const QuantConfig& config, const LayerPlan& plan,
                         const Checkpoint& checkpoint, const std::string& module);

}  // namespace nibble::quant
