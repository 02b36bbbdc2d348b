#include "quantize/recipe.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf/gguf_file.h"
#include "formats/hf/hf_config.h"
#include "quantize/recipe_yaml.h"

namespace nibble::quantize {

ModulePattern::ModulePattern(std::string pattern) : text(std::move(pattern)) {
  if (text.rfind("re:", 0) == 0) {
    regex.emplace(text.substr(3), fmt::format("--ignore '{}'", text));
  }
}

bool ModulePattern::matches(const std::string& module) const {
  if (regex) return regex->match_full(module);
  if (module == text) return true;
  // "lm_head" ignores "lm_head"; "mlp.down_proj" ignores every layer's down_proj.
  return module.size() > text.size() &&
         module.compare(module.size() - text.size(), text.size(), text) == 0 &&
         module[module.size() - text.size() - 1] == '.';
}

bool Recipe::ignored(const std::string& module) const {
  for (const auto& p : ignore)
    if (p.matches(module)) return true;
  return false;
}

Method parse_method(const std::string& name) {
  if (name == "rtn") return Method::Rtn;
  if (name == "gptq") return Method::Gptq;
  if (name == "awq") return Method::Awq;
  if (name == "smoothquant") return Method::SmoothQuant;
  if (name == "smoothquant+gptq") return Method::SmoothQuantGptq;
  if (name == "imatrix") return Method::Imatrix;
  fail(
      "--method: unknown value '{}' (expected rtn, gptq, awq, smoothquant, smoothquant+gptq or "
      "imatrix)",
      name);
}

std::string method_name(Method m) {
  switch (m) {
    case Method::Rtn: return "rtn";
    case Method::Gptq: return "gptq";
    case Method::Awq: return "awq";
    case Method::SmoothQuant: return "smoothquant";
    case Method::Imatrix: return "imatrix";
    case Method::SmoothQuantGptq:
    default: return "smoothquant+gptq";
  }
}

std::string kv_cache_scheme_from_args(const std::map<std::string, std::string>& args,
                                      const std::string& where) {
  const std::map<std::string, std::vector<std::string>> accepted = {
      {"num_bits", {"8"}},
      {"type", {"float"}},
      {"strategy", {"tensor"}},
      {"dynamic", {"false", "False"}},
      {"symmetric", {"true", "True"}},
      {"observer", {"minmax", "static_minmax", "null", "~", ""}},
      {"group_size", {"null", "~", ""}}};
  for (const auto& [key, value] : args) {
    const auto it = accepted.find(key);
    NIBBLE_CHECK(it != accepted.end(),
                 "{}: unknown key '{}' in kv_cache_scheme (nibble reads num_bits, type, strategy, "
                 "dynamic, symmetric, observer, group_size)",
                 where, key);
    NIBBLE_CHECK(std::find(it->second.begin(), it->second.end(), value) != it->second.end(),
                 "{}: kv_cache_scheme.{} '{}' is not supported (nibble calibrates static "
                 "per-tensor fp8 K/V scales: num_bits 8, type float, strategy tensor, dynamic "
                 "false, symmetric true)",
                 where, key, value);
  }
  for (const char* key : {"num_bits", "type"})
    NIBBLE_CHECK(args.count(key) != 0, "{}: kv_cache_scheme needs {}", where, key);
  return "fp8";
}

void apply_scheme(Recipe& r, int64_t group_size_flag, std::optional<bool> symmetric_flag) {
  const std::string& s = r.scheme;
  r.act = quant::ActQuantKind::None;
  if (s == "W4A16" || s == "W8A16" || s == "W8A8" || s == "W4A16_ASYM" || s == "W2A16" ||
      s == "W3A16") {
    r.kind = WeightKind::Int;
    r.bits = s[1] - '0';
    r.group_size = r.bits == 8 ? -1 : 128;
    r.symmetric = s != "W4A16_ASYM";
    if (s == "W8A8") r.act = quant::ActQuantKind::DynamicPerTokenInt8;
  } else if (s == "FP8_DYNAMIC") {
    r.kind = WeightKind::Fp8;
    r.act = quant::ActQuantKind::DynamicPerTokenFp8;
  } else if (s == "FP8") {
    r.kind = WeightKind::Fp8;
    r.fp8_per_tensor = true;
    r.act = quant::ActQuantKind::StaticPerTensorFp8;
  } else if (s == "FP8_BLOCK") {
    r.kind = WeightKind::Fp8;
    r.fp8_block = 128;
    r.act = quant::ActQuantKind::DynamicPerTokenGroupFp8;
    r.act_group_size = 128;
  } else if (s == "Q4_0" || s == "Q8_0" || s == "Q4_K") {
    r.kind = WeightKind::Gguf;
    const auto t = gguf::type_from_name(s);
    NIBBLE_CHECK(t.has_value(), "--scheme {}: unknown GGUF type", s);
    r.gguf_type = int(*t);
  } else if (s == "NVFP4") {
    r.kind = WeightKind::Nvfp4;
    r.act = quant::ActQuantKind::Nvfp4;
    r.act_group_size = 16;
  } else {
    fail(
        "--scheme: unknown value '{}' (expected W4A16, W4A16_ASYM, W8A16, W8A8, FP8_DYNAMIC, "
        "FP8, FP8_BLOCK, NVFP4, Q4_0, Q8_0, Q4_K)",
        s);
  }
  if (group_size_flag != 0) {
    NIBBLE_CHECK(r.kind == WeightKind::Int, "--group-size applies to integer schemes, not {}", s);
    NIBBLE_CHECK(group_size_flag == -1 || group_size_flag > 0,
                 "--group-size {}: expected -1 (per channel) or a positive size", group_size_flag);
    r.group_size = group_size_flag;
  }
  if (symmetric_flag) {
    NIBBLE_CHECK(r.kind == WeightKind::Int, "--asym/--sym apply to integer schemes, not {}", s);
    r.symmetric = *symmetric_flag;
  }
  if (r.act == quant::ActQuantKind::DynamicPerTokenInt8)
    NIBBLE_CHECK(r.symmetric, "--scheme W8A8: weights must be symmetric (vLLM's int8 kernel)");

  // Method and format.
  const bool int_method = r.method == Method::Gptq || r.method == Method::Awq ||
                          r.method == Method::SmoothQuantGptq || r.method == Method::SmoothQuant;
  NIBBLE_CHECK(!int_method || r.kind == WeightKind::Int,
               "--method {}: calibrated methods apply to integer schemes; use --method rtn for {}",
               method_name(r.method), s);
  NIBBLE_CHECK(r.method != Method::Imatrix || r.kind == WeightKind::Gguf,
               "--method imatrix weights GGUF block types (--scheme Q4_0 or Q4_K), not {}", s);
  const bool smooth = r.method == Method::SmoothQuant || r.method == Method::SmoothQuantGptq;
  NIBBLE_CHECK(!smooth || r.act == quant::ActQuantKind::DynamicPerTokenInt8,
               "--method {}: SmoothQuant moves activation outliers into the weights; it is for "
               "W8A8 (int8 activations), not {}",
               method_name(r.method), s);
  const std::string& f = r.format;
  NIBBLE_CHECK(r.kind != WeightKind::Nvfp4 || f == "modelopt",
               "--scheme NVFP4 is written as --format modelopt");
  // ModelOpt's quant_algo FP8 is per-tensor weights with static per-tensor input scales.
  NIBBLE_CHECK(f != "modelopt" || r.kind == WeightKind::Nvfp4 || s == "FP8",
               "--format modelopt holds --scheme NVFP4 or FP8 (ModelOpt's quant_algo NVFP4 / FP8), "
               "not {}",
               s);
  if (f == "gguf") {
    NIBBLE_CHECK(r.kind == WeightKind::Gguf, "--format gguf needs --scheme Q4_0, Q8_0 or Q4_K");
  } else {
    NIBBLE_CHECK(r.kind != WeightKind::Gguf, "--scheme {} needs --format gguf", s);
  }
  if (f == "gptq") {
    NIBBLE_CHECK(r.kind == WeightKind::Int && r.act == quant::ActQuantKind::None,
                 "--format gptq holds weight-only integer schemes (W4A16, W8A16), not {}", s);
  } else if (f == "awq") {
    NIBBLE_CHECK(r.kind == WeightKind::Int && r.bits == 4 && r.act == quant::ActQuantKind::None &&
                     r.group_size != -1 && !r.act_order,
                 "--format awq holds 4-bit grouped weight-only integers without act-order (AutoAWQ "
                 "GEMM)");
  } else if (f == "fp8") {
    NIBBLE_CHECK(r.kind == WeightKind::Fp8 && s != "FP8_DYNAMIC",
                 "--format fp8 holds --scheme FP8 (per-tensor, static activations) or FP8_BLOCK; "
                 "FP8_DYNAMIC (per-channel) is written as --format compressed-tensors");
  } else if (f == "compressed-tensors") {
    NIBBLE_CHECK(r.kind == WeightKind::Int || r.kind == WeightKind::Fp8,
                 "--format compressed-tensors holds integer and FP8 schemes, not {}", s);
  } else if (f != "gguf" && f != "modelopt") {
    fail(
        "--format: unknown value '{}' (expected compressed-tensors, gptq, awq, fp8, modelopt or "
        "gguf)",
        f);
  }
  // compressed-tensors ≥ 0.20 refuses actorder "group" (a stored g_idx): act-order there is
  // "weight" — columns processed in Hessian order with groups fixed on natural column blocks
  // (GPTQ's static_groups), so nothing beyond the plain layout is stored.
  if (r.act_order && f == "compressed-tensors") r.static_groups = true;
  if (r.act_order)
    NIBBLE_CHECK(r.method == Method::Gptq || r.method == Method::SmoothQuantGptq,
                 "--act-order applies to GPTQ");
}

void read_recipe_file(const std::filesystem::path& path, Recipe& r, int64_t& group_size,
                      std::optional<bool>& symmetric) {
  if (path.extension() == ".yaml" || path.extension() == ".yml")
    return read_llm_compressor_recipe(path, r);
  const nlohmann::json j = read_json_file(path);
  NIBBLE_CHECK(j.is_object(), "--recipe {}: expected a JSON object", path.string());
  try {
    for (const auto& [key, value] : j.items()) {
      if (key == "scheme") {
        r.scheme = value.get<std::string>();
      } else if (key == "method") {
        r.method = parse_method(value.get<std::string>());
      } else if (key == "format") {
        r.format = value.get<std::string>();
      } else if (key == "group_size") {
        group_size = value.get<int64_t>();
      } else if (key == "symmetric") {
        symmetric = value.get<bool>();
      } else if (key == "act_order") {
        r.act_order = value.get<bool>();
      } else if (key == "static_groups") {
        r.static_groups = value.get<bool>();
      } else if (key == "damp_percent") {
        r.damp_percent = value.get<double>();
      } else if (key == "smoothquant_alpha") {
        r.smoothquant_alpha = value.get<float>();
      } else if (key == "ignore") {
        for (const auto& p : value) r.ignore.emplace_back(p.get<std::string>());
      } else if (key == "kv_cache_scheme") {
        // "fp8", null, or LLM Compressor's argument object.
        if (value.is_null()) {
          r.kv_cache_scheme.clear();
        } else if (value.is_string()) {
          NIBBLE_CHECK(value.get<std::string>() == "fp8",
                       "--recipe {}: kv_cache_scheme '{}' (expected \"fp8\" or LLM Compressor's "
                       "{{\"num_bits\": 8, \"type\": \"float\", ...}})",
                       path.string(), value.get<std::string>());
          r.kv_cache_scheme = "fp8";
        } else {
          NIBBLE_CHECK(value.is_object(), "--recipe {}: kv_cache_scheme must be an object",
                       path.string());
          std::map<std::string, std::string> args;
          for (const auto& [k, v] : value.items())
            args[k] = v.is_string() ? v.get<std::string>() : v.dump();
          r.kv_cache_scheme = kv_cache_scheme_from_args(args, "--recipe " + path.string());
        }
      } else {
        fail("--recipe {}: unknown key '{}'", path.string(), key);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail("--recipe {}: {}", path.string(), e.what());
  }
}

}  // namespace nibble::quantize
