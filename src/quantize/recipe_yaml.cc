#include "quantize/recipe_yaml.h"

#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <optional>
#include <set>
#include <string>

#include "core/error.h"

namespace nibble::quantize {
namespace {

struct Context {
  std::string file;
  std::string where;  // "quant_stage.quant_modifiers.GPTQModifier"
};

std::string scalar(const YAML::Node& node, const Context& c, const std::string& key) {
  NIBBLE_CHECK(node.IsScalar(), "--recipe {}: {}.{} must be a single value", c.file, c.where, key);
  return node.as<std::string>();
}

std::vector<std::string> strings(const YAML::Node& node, const Context& c, const std::string& key) {
  std::vector<std::string> out;
  if (node.IsScalar()) {
    out.push_back(node.as<std::string>());
  } else {
    NIBBLE_CHECK(node.IsSequence(), "--recipe {}: {}.{} must be a string or a list of strings",
                 c.file, c.where, key);
    for (const auto& item : node) out.push_back(scalar(item, c, key));
  }
  return out;
}

// Only whole decoder linears are quantized: LLM Compressor's targets "Linear" (every linear
// layer, minus `ignore`) is the one target nibble knows.
void check_targets(const YAML::Node& node, const Context& c) {
  for (const std::string& t : strings(node, c, "targets"))
    NIBBLE_CHECK(t == "Linear",
                 "--recipe {}: {}.targets '{}' is not supported (only 'Linear'; leave modules "
                 "out with ignore)",
                 c.file, c.where, t);
}

// The keys each modifier takes; anything else is an error naming it.
struct ModifierArgs {
  std::string scheme;
  std::vector<std::string> ignore;
  std::optional<double> dampening_frac;
  std::optional<int64_t> block_size;
  std::optional<bool> actorder;
  std::optional<float> smoothing_strength;
  std::optional<std::string> kv_cache_scheme;  // "fp8", or "" for an explicit null
};

std::optional<bool> parse_actorder(const std::string& v, const Context& c) {
  // LLM Compressor: true/"group"/"weight"/"static" order columns by the Hessian; false/null
  // keep the natural order. nibble writes the compressed-tensors "weight" form either way.
  if (v == "true" || v == "True" || v == "group" || v == "weight" || v == "static") return true;
  if (v == "false" || v == "False" || v == "null" || v == "~") return false;
  fail("--recipe {}: {}.actorder '{}' (expected true, false, group, weight or static)", c.file,
       c.where, v);
}

ModifierArgs read_modifier(const YAML::Node& node, const Context& c,
                           const std::set<std::string>& allowed) {
  NIBBLE_CHECK(node.IsMap() || node.IsNull(), "--recipe {}: {} must be a mapping of arguments",
               c.file, c.where);
  ModifierArgs a;
  if (node.IsNull()) return a;
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    NIBBLE_CHECK(allowed.count(key) != 0, "--recipe {}: unknown key '{}' in {} (nibble reads: {})",
                 c.file, key, c.where, fmt::join(allowed, ", "));
    const YAML::Node& v = kv.second;
    try {
      if (key == "targets") {
        check_targets(v, c);
      } else if (key == "scheme") {
        NIBBLE_CHECK(v.IsScalar(),
                     "--recipe {}: {}.scheme must be a preset name (W4A16, W8A8, FP8_DYNAMIC, "
                     "...); config_groups are not supported",
                     c.file, c.where);
        a.scheme = v.as<std::string>();
      } else if (key == "ignore") {
        a.ignore = strings(v, c, key);
      } else if (key == "dampening_frac") {
        a.dampening_frac = v.as<double>();
      } else if (key == "block_size") {
        a.block_size = v.as<int64_t>();
      } else if (key == "actorder") {
        a.actorder = parse_actorder(scalar(v, c, key), c);
      } else if (key == "kv_cache_scheme") {
        if (v.IsNull()) {
          a.kv_cache_scheme = "";
        } else {
          NIBBLE_CHECK(v.IsMap(),
                       "--recipe {}: {}.kv_cache_scheme must be a mapping (num_bits: 8, type: "
                       "float, strategy: tensor, dynamic: false, symmetric: true)",
                       c.file, c.where);
          std::map<std::string, std::string> args;
          for (const auto& arg : v) {
            const std::string name = arg.first.as<std::string>();
            args[name] =
                arg.second.IsNull() ? "null" : scalar(arg.second, c, "kv_cache_scheme." + name);
          }
          a.kv_cache_scheme =
              kv_cache_scheme_from_args(args, fmt::format("--recipe {}: {}", c.file, c.where));
        }
      } else if (key == "smoothing_strength") {
        a.smoothing_strength = v.as<float>();
      } else if (key == "sequential_update" || key == "offload_hessians") {
        // Always the case in nibble (layer by layer; one layer's Hessians in memory).
      }
    } catch (const YAML::Exception& e) {
      fail("--recipe {}: {}.{}: {}", c.file, c.where, key, e.what());
    }
  }
  return a;
}

}  // namespace

void read_llm_compressor_recipe(const std::filesystem::path& path, Recipe& r) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::Exception& e) {
    fail("--recipe {}: not valid YAML: {}", path.string(), e.what());
  }
  const std::string file = path.string();
  NIBBLE_CHECK(root.IsMap(), "--recipe {}: expected stages (e.g. quant_stage:) at the top level",
               file);
  // kv_cache_scheme belongs to every quantization modifier (LLM Compressor's QuantizationMixin).
  const std::set<std::string> quant_keys = {"targets", "scheme", "ignore", "kv_cache_scheme"};
  std::set<std::string> gptq_keys = quant_keys;
  gptq_keys.insert(
      {"dampening_frac", "block_size", "actorder", "sequential_update", "offload_hessians"});
  const std::set<std::string> smooth_keys = {"smoothing_strength", "ignore"};
  bool quant = false, gptq = false, awq = false, smooth = false;
  ModifierArgs weights;
  for (const auto& stage : root) {
    const std::string stage_name = stage.first.as<std::string>();
    NIBBLE_CHECK(stage.second.IsMap(), "--recipe {}: stage '{}' must be a mapping", file,
                 stage_name);
    for (const auto& group : stage.second) {
      const std::string group_name = group.first.as<std::string>();
      NIBBLE_CHECK(group_name.ends_with("_modifiers") && group.second.IsMap(),
                   "--recipe {}: unknown key '{}' in {} (expected <name>_modifiers: with "
                   "modifiers under it)",
                   file, group_name, stage_name);
      for (const auto& mod : group.second) {
        const std::string name = mod.first.as<std::string>();
        const Context c{file, stage_name + "." + group_name + "." + name};
        if (name == "QuantizationModifier" || name == "GPTQModifier" || name == "AWQModifier") {
          NIBBLE_CHECK(!quant && !gptq && !awq,
                       "--recipe {}: {}: one weight quantization modifier per recipe", file,
                       c.where);
          const bool is_gptq = name == "GPTQModifier";
          weights = read_modifier(mod.second, c, is_gptq ? gptq_keys : quant_keys);
          quant = name == "QuantizationModifier";
          gptq = is_gptq;
          awq = name == "AWQModifier";
          NIBBLE_CHECK(!weights.scheme.empty(), "--recipe {}: {} needs a scheme", file, c.where);
        } else if (name == "SmoothQuantModifier") {
          const ModifierArgs s = read_modifier(mod.second, c, smooth_keys);
          smooth = true;
          if (s.smoothing_strength) r.smoothquant_alpha = *s.smoothing_strength;
        } else {
          fail(
              "--recipe {}: unknown key '{}' in {}.{} (nibble knows QuantizationModifier, "
              "GPTQModifier, AWQModifier, SmoothQuantModifier)",
              file, name, stage_name, group_name);
        }
      }
    }
  }
  NIBBLE_CHECK(quant || gptq || awq,
               "--recipe {}: no QuantizationModifier, GPTQModifier or AWQModifier", file);
  r.scheme = weights.scheme;
  if (gptq) r.method = smooth ? Method::SmoothQuantGptq : Method::Gptq;
  if (quant) r.method = smooth ? Method::SmoothQuant : Method::Rtn;
  if (awq) {
    NIBBLE_CHECK(!smooth, "--recipe {}: SmoothQuantModifier does not combine with AWQModifier",
                 file);
    r.method = Method::Awq;
  }
  // lm_head is never quantized by nibble; the other patterns use compressed-tensors' syntax
  // (an exact path, a trailing part or re:REGEX), as LLM Compressor's ignore does.
  for (const std::string& p : weights.ignore)
    if (p != "lm_head") r.ignore.emplace_back(p);
  if (weights.dampening_frac) r.damp_percent = *weights.dampening_frac;
  if (weights.block_size) r.gptq_block_size = *weights.block_size;
  if (weights.actorder) r.act_order = *weights.actorder;
  if (weights.kv_cache_scheme) r.kv_cache_scheme = *weights.kv_cache_scheme;
}

}  // namespace nibble::quantize
