#pragma once
// What an offline quantization run does: the scheme (weights and activations), the method that
// picks the codes, the export format, and which modules stay unquantized. Named schemes follow
// llm-compressor's presets (W4A16, W8A16, W8A8, FP8_DYNAMIC, FP8, FP8_BLOCK, NVFP4) and GGUF's
// type names (Q4_0, Q8_0, Q4_K).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/module_regex.h"
#include "quant/scheme.h"

namespace nibble::quantize {

enum class WeightKind { Int, Fp8, Gguf, Nvfp4 };
// Imatrix: GGUF block types with the calibration inputs' mean x² per column as the importance
// of each weight in the block scale searches (llama.cpp's imatrix).
enum class Method { Rtn, Gptq, Awq, SmoothQuant, SmoothQuantGptq, Imatrix };

// A module-path pattern: an exact path, a substring (as AWQ's modules_to_not_convert), or a
// "re:" regex matched against the whole path (as compressed-tensors' ignore).
struct ModulePattern {
  std::string text;
  std::optional<ModuleRegex> regex;
  explicit ModulePattern(std::string pattern);
  bool matches(const std::string& module) const;
};

struct Recipe {
  std::string scheme = "W4A16";
  Method method = Method::Gptq;
  std::string format = "compressed-tensors";

  WeightKind kind = WeightKind::Int;
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool symmetric = true;
  quant::ActQuantKind act = quant::ActQuantKind::None;
  int64_t act_group_size = 0;   // FP8_BLOCK activations
  int64_t fp8_block = 0;        // FP8_BLOCK: 128x128 weight blocks
  bool fp8_per_tensor = false;  // FP8 (static)
  int gguf_type = -1;           // Q4_0 / Q8_0 / Q4_K
  // LLM Compressor's kv_cache_scheme: "" (none) or "fp8" (static per-tensor e4m3 K/V scales).
  std::string kv_cache_scheme;

  // GPTQ
  double damp_percent = 0.01;
  bool act_order = false;
  bool static_groups = false;
  int64_t gptq_block_size = 128;
  // SmoothQuant migration strength; AWQ grid points.
  float smoothquant_alpha = 0.5f;
  int awq_grid = 20;

  std::vector<ModulePattern> ignore;
  bool ignored(const std::string& module) const;
};

// LLM Compressor's kv_cache_scheme (the QuantizationArgs of the K/V cache), its values as
// strings ("8", "float", "tensor", "false", "null"): nibble calibrates static per-tensor fp8
// e4m3 K/V scales only, so the arguments must say that (num_bits 8, type float, strategy
// tensor, dynamic false, symmetric true; observer and group_size may be given as LLM
// Compressor writes them). Returns "fp8"; Error naming `where` and the argument otherwise.
std::string kv_cache_scheme_from_args(const std::map<std::string, std::string>& args,
                                      const std::string& where);

Method parse_method(const std::string& name);
std::string method_name(Method m);

// Fills the weight/activation fields from `scheme` (and the method/format), with user overrides
// applied after: group_size (0 keeps the scheme's default), symmetric. Error on a scheme, method
// or format that do not go together, naming the flag.
void apply_scheme(Recipe& recipe, int64_t group_size_flag, std::optional<bool> symmetric_flag);

// Reads a JSON recipe file: {"scheme", "method", "format", "group_size", "symmetric",
// "act_order", "static_groups", "damp_percent", "smoothquant_alpha", "ignore": [...]}; keys
// absent keep the values already in `recipe` (command-line flags). Unknown keys are an Error.
// A .yaml/.yml file is an LLM Compressor recipe (recipe_yaml.h).
void read_recipe_file(const std::filesystem::path& path, Recipe& recipe, int64_t& group_size,
                      std::optional<bool>& symmetric);

}  // namespace nibble::quantize
