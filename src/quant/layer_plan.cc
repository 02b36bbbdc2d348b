// Per-layer resolution: which scheme a linear module gets under a QuantConfig (ignore lists,
// targets, GPTQModel `dynamic`, lm_head), and loading it.
#include <algorithm>

#include "core/error.h"
#include "quant/formats/tensor_access.h"
#include "quant/resolve.h"

namespace nibble::quant {
namespace {

bool glob_match(const char* pattern, const char* text) {
  // fnmatch without character classes: '*' any run, '?' one character.
  if (*pattern == '\0') return *text == '\0';
  if (*pattern == '*') {
    for (const char* t = text;; ++t) {
      if (glob_match(pattern + 1, t)) return true;
      if (*t == '\0') return false;
    }
  }
  if (*text == '\0') return false;
  return (*pattern == '?' || *pattern == *text) && glob_match(pattern + 1, text + 1);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string last_component(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

// Fp8Config.is_layer_skipped: a name matches the module itself or a parent, written with or
// without the "model." prefix.
bool fp8_ignored(const std::vector<std::string>& ignored, const std::string& module) {
  auto strip = [](const std::string& s) { return s.rfind("model.", 0) == 0 ? s.substr(6) : s; };
  const std::string bare = strip(module);
  for (const auto& entry : ignored) {
    const std::string e = strip(entry);
    if (e.empty()) continue;
    if (bare == e || bare.rfind(e + ".", 0) == 0) return true;
  }
  return false;
}

// ModelOpt exclude_modules: exact, fnmatch, and "x*" also covering "x" itself (vLLM).
bool modelopt_excluded(const std::vector<std::string>& patterns, const std::string& module) {
  for (const auto& p : patterns) {
    if (p == module || glob_match(p.c_str(), module.c_str())) return true;
    if (ends_with(p, "*") && p.substr(0, p.size() - 1) == module) return true;
    if (ends_with(p, ".*") && p.substr(0, p.size() - 2) == module) return true;
  }
  return false;
}

bool ct_target_matches(const ModuleMatcher& m, const std::string& module) {
  // "Linear" is the class of every linear module; plan_layer is only asked about linears.
  if (!m.regex && m.text == "Linear") return true;
  return m.matches(module);
}

}  // namespace

LayerPlan plan_layer(const QuantConfig& c, const std::string& module) {
  LayerPlan plan;
  const bool lm_head = last_component(module) == "lm_head";
  const std::string& method = c.checkpoint_method;
  if (method == "gptq") {
    if (lm_head && !c.gptq.lm_head) return plan;
    GptqParams p = c.gptq.params;
    // Exclusions win over overrides. (vLLM takes the first match in file order; the JSON
    // object here is key-sorted, so overlapping "+:" rules apply in key order.)
    for (const auto& rule : c.gptq.dynamic)
      if (rule.exclude && rule.regex->match_prefix(module)) return plan;
    for (const auto& rule : c.gptq.dynamic) {
      if (rule.exclude || !rule.regex->match_prefix(module)) continue;
      if (rule.bits) p.bits = *rule.bits;
      if (rule.group_size) p.group_size = *rule.group_size;
      if (rule.sym) p.sym = *rule.sym;
      if (rule.desc_act) p.desc_act = *rule.desc_act;
      break;
    }
    if (!c.gptq.modules_in_block.empty() && !lm_head &&
        std::none_of(c.gptq.modules_in_block.begin(), c.gptq.modules_in_block.end(),
                     [&](const std::string& m) { return ends_with(module, "." + m); }))
      return plan;
    plan.format = LayerFormat::Gptq;
    plan.gptq = p;
  } else if (method == "awq") {
    if (lm_head) return plan;
    for (const auto& skip : c.awq.modules_to_not_convert)
      if (!skip.empty() && module.find(skip) != std::string::npos) return plan;
    plan.format = LayerFormat::Awq;
    plan.awq = c.awq.params;
  } else if (method == "compressed-tensors") {
    for (const auto& ignore : c.ct.ignore)
      if (ignore.matches(module)) return plan;
    for (const auto& group : c.ct.groups) {
      if (std::none_of(group.targets.begin(), group.targets.end(),
                       [&](const ModuleMatcher& m) { return ct_target_matches(m, module); }))
        continue;
      plan.format =
          group.format == "pack-quantized" ? LayerFormat::CtPacked : LayerFormat::CtUnpacked;
      plan.ct = group.weights;
      plan.act = group.act;
      return plan;
    }
  } else if (method == "fp8" || method == "fbgemm_fp8") {
    if (fp8_ignored(c.fp8.ignored, module)) return plan;
    plan.format = LayerFormat::Fp8;
    if (c.fp8.block_rows > 0) {
      plan.fp8_scale_suffix = "weight_scale_inv";
      plan.block_rows = c.fp8.block_rows;
      plan.block_cols = c.fp8.block_cols;
      plan.act.kind = ActQuantKind::DynamicPerTokenGroupFp8;
      plan.act.group_size = c.fp8.block_cols;
    } else {
      plan.fp8_scale_suffix = "weight_scale";
      plan.act.kind = c.fp8.static_activations ? ActQuantKind::StaticPerTensorFp8
                                               : ActQuantKind::DynamicPerTokenFp8;
    }
  } else if (method == "modelopt_fp8" || method == "modelopt_fp4") {
    if (modelopt_excluded(c.modelopt.exclude_modules, module)) return plan;
    const std::string& algo = c.modelopt.quant_algo;
    if (method == "modelopt_fp8") {
      plan.format = LayerFormat::Fp8;
      plan.fp8_scale_suffix = "weight_scale";
      plan.act.kind =
          algo == "FP8" ? ActQuantKind::StaticPerTensorFp8 : ActQuantKind::DynamicPerTokenFp8;
    } else {
      plan.format = LayerFormat::Nvfp4;
      if (algo == "NVFP4") {
        plan.act.kind = ActQuantKind::Nvfp4;
        plan.act.group_size = 16;
      }
    }
  } else if (method == "bitsandbytes") {
    // transformers never converts lm_head, nor the llm_int8_skip_modules (substring match).
    if (lm_head) return plan;
    for (const auto& skip : c.bnb.skip_modules)
      if (!skip.empty() && module.find(skip) != std::string::npos) return plan;
    plan.format = LayerFormat::Bnb4;
    plan.bnb = c.bnb.params;
  } else {
    fail("{}: quantization method '{}' has no layer plan", c.source, method);
  }
  return plan;
}

LinearScheme load_linear(const QuantConfig& c, const LayerPlan& plan, const Checkpoint& ckpt,
                         const std::string& module) {
  LinearScheme scheme;
  scheme.method = c.method;
  scheme.act = plan.act;
  switch (plan.format) {
    case LayerFormat::Dense: fail("{}: layer '{}' is not quantized", ckpt.source(), module);
    case LayerFormat::Gptq: scheme.weight = load_gptq(ckpt, module, plan.gptq); break;
    case LayerFormat::Awq: scheme.weight = load_awq(ckpt, module, plan.awq); break;
    case LayerFormat::CtPacked:
      scheme.weight = load_ct_pack_quantized(ckpt, module, plan.ct);
      break;
    case LayerFormat::CtUnpacked: scheme.weight = load_ct_unpacked(ckpt, module, plan.ct); break;
    case LayerFormat::Fp8:
      scheme.weight = load_fp8_weight(ckpt, module, c.method, plan.fp8_scale_suffix,
                                      plan.block_rows, plan.block_cols);
      break;
    case LayerFormat::Nvfp4: scheme.weight = load_modelopt_nvfp4(ckpt, module); break;
    case LayerFormat::Bnb4: scheme.weight = load_bnb_4bit(ckpt, module, plan.bnb); break;
  }
  const LayerTensors L(ckpt, module, c.method);
  const bool static_act = plan.act.kind == ActQuantKind::StaticPerTensorFp8 ||
                          plan.act.kind == ActQuantKind::StaticPerTensorInt8;
  if (static_act) {
    scheme.act.input_scale = L.scalar(L.require("input_scale"));
    if (const CheckpointTensor* zp = L.find("input_zero_point")) {
      if (L.numel(*zp) != 1) L.fail_layer("input_zero_point must be a single value");
      scheme.act.input_zero_point = L.ints(*zp)[0];
    }
  } else if (plan.act.kind == ActQuantKind::Nvfp4) {
    if (const CheckpointTensor* s = L.find("input_scale")) scheme.act.input_scale = L.scalar(*s);
  }
  return scheme;
}

}  // namespace nibble::quant
