#include "quant/resolve.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "core/error.h"
#include "formats/hf/hf_config.h"
#include "quant/online.h"

namespace nibble::quant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Typed reads of optional keys; a wrong type names the key and the source.
class Fields {
 public:
  Fields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("{}: expected a JSON object, got {}", where_, j_.dump());
  }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  // A missing key reads as null: const operator[] on a missing key is undefined behaviour
  // (nlohmann asserts), and configs omit optional keys all the time.
  const json& raw(const char* key) const {
    static const json kNull;
    const auto it = j_.find(key);
    return it == j_.end() ? kNull : *it;
  }
  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_number_integer())
      fail("{}: '{}' must be an integer, got {}", where_, key, j_[key].dump());
    return j_[key].get<int64_t>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean())
      fail("{}: '{}' must be true or false, got {}", where_, key, j_[key].dump());
    return j_[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback = "") const {
    if (!has(key)) return fallback;
    if (!j_[key].is_string())
      fail("{}: '{}' must be a string, got {}", where_, key, j_[key].dump());
    return j_[key].get<std::string>();
  }
  std::vector<std::string> strings(const char* key) const {
    std::vector<std::string> out;
    if (!has(key)) return out;
    if (!j_[key].is_array())
      fail("{}: '{}' must be a list of strings, got {}", where_, key, j_[key].dump());
    for (const auto& v : j_[key]) {
      if (!v.is_string()) fail("{}: '{}' must be a list of strings, got {}", where_, key, v.dump());
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
};

ModuleRegex compile_regex(const std::string& pattern, const std::string& where) {
  return ModuleRegex(pattern, where);
}

// --- GPTQ -----------------------------------------------------------------------------------

void parse_gptq(const Fields& f, QuantConfig& q) {
  GptqParams& p = q.gptq.params;
  p.bits = static_cast<int>(f.integer("bits", 4));
  p.group_size = f.integer("group_size", 128);
  p.sym = f.boolean("sym", true);
  p.desc_act = f.boolean("desc_act", false);
  const std::string format = lower(f.string("checkpoint_format", f.string("format", "gptq")));
  if (format == "marlin" || f.boolean("is_marlin_format", false))
    fail(
        "{}: GPTQ checkpoint_format 'marlin' (AutoGPTQ serialized Marlin tiles) is not "
        "supported: load the original 'gptq' checkpoint instead",
        f.where());
  if (format != "gptq" && format != "gptq_v2")
    fail("{}: GPTQ checkpoint_format '{}' is not supported (expected 'gptq' or 'gptq_v2')",
         f.where(), format);
  p.v2 = format == "gptq_v2";
  const std::string pack_dtype = f.string("pack_dtype", "int32");
  if (pack_dtype != "int32")
    fail("{}: GPTQ pack_dtype '{}' is not supported (only int32)", f.where(), pack_dtype);
  if (p.bits != 2 && p.bits != 3 && p.bits != 4 && p.bits != 8)
    fail("{}: GPTQ bits={} is not supported (2, 3, 4 or 8)", f.where(), p.bits);
  if (p.group_size != -1 && p.group_size <= 0)
    fail("{}: GPTQ group_size={} (expected -1 or a positive size)", f.where(), p.group_size);
  q.gptq.lm_head = f.boolean("lm_head", false);
  if (f.has("dynamic")) {
    const json& dyn = f.raw("dynamic");
    if (!dyn.is_object()) fail("{}: 'dynamic' must be an object of regex -> overrides", f.where());
    for (const auto& [key, value] : dyn.items()) {
      GptqDynamicRule rule;
      std::string pattern = key;
      if (pattern.rfind("-:", 0) == 0) {
        rule.exclude = true;
        pattern = pattern.substr(2);
      } else if (pattern.rfind("+:", 0) == 0) {
        pattern = pattern.substr(2);
      }
      rule.pattern = pattern;
      rule.regex = compile_regex(pattern, f.where() + " dynamic");
      const Fields o(value, f.where() + " dynamic['" + key + "']");
      if (o.has("bits")) rule.bits = static_cast<int>(o.integer("bits", 4));
      if (o.has("group_size")) rule.group_size = o.integer("group_size", 128);
      if (o.has("sym")) rule.sym = o.boolean("sym", true);
      if (o.has("desc_act")) rule.desc_act = o.boolean("desc_act", false);
      q.gptq.dynamic.push_back(std::move(rule));
    }
  }
  if (f.has("modules_in_block_to_quantize")) {
    // A list of names, or a list of lists (one per sequential step).
    for (const auto& entry : f.raw("modules_in_block_to_quantize")) {
      if (entry.is_string())
        q.gptq.modules_in_block.push_back(entry.get<std::string>());
      else if (entry.is_array())
        for (const auto& name : entry)
          if (name.is_string()) q.gptq.modules_in_block.push_back(name.get<std::string>());
    }
  }
}

// --- AWQ ------------------------------------------------------------------------------------

void parse_awq(const Fields& f, QuantConfig& q) {
  const std::string version = lower(f.string("version", "gemm"));
  if (version == "gemv" || version == "gemv_fast")
    fail(
        "{}: AWQ version '{}' is not supported: its qweight is [N, K/8] packed along K (not "
        "the GEMM layout [K, N/8] that vLLM and SGLang assume), so it cannot be loaded as GEMM; "
        "re-export the model with AutoAWQ version 'gemm'",
        f.where(), version);
  if (version != "gemm")
    fail("{}: AWQ version '{}' is not supported (only 'gemm')", f.where(), version);
  AwqParams& p = q.awq.params;
  p.bits = static_cast<int>(f.integer("bits", f.integer("w_bit", 4)));
  p.group_size = f.integer("group_size", f.integer("q_group_size", 128));
  if (p.bits != 4)
    fail("{}: AWQ bits={} is not supported (AutoAWQ GEMM is 4-bit)", f.where(), p.bits);
  if (!f.boolean("zero_point", true))
    fail("{}: AWQ zero_point=false is not supported (AutoAWQ GEMM always stores zero points)",
         f.where());
  q.awq.modules_to_not_convert = f.strings("modules_to_not_convert");
}

// --- compressed-tensors ---------------------------------------------------------------------

ModuleMatcher make_matcher(const std::string& text, const std::string& where) {
  ModuleMatcher m;
  m.text = text;
  if (text.rfind("re:", 0) == 0) m.regex = compile_regex(text.substr(3), where);
  return m;
}

CtWeightArgs parse_ct_weight_args(const Fields& a) {
  CtWeightArgs w;
  w.bits = static_cast<int>(a.integer("num_bits", 8));
  const std::string type = a.string("type", "int");
  if (type != "int" && type != "float")
    fail("{}: type '{}' (expected int or float)", a.where(), type);
  w.is_float = type == "float";
  w.symmetric = a.boolean("symmetric", true);
  w.group_size = a.integer("group_size", 0);
  w.strategy = a.string("strategy");
  if (w.strategy.empty()) {  // inferred as compressed-tensors does
    if (!a.has("group_size"))
      w.strategy = "tensor";
    else if (w.group_size == -1)
      w.strategy = "channel";
    else
      w.strategy = "group";
  }
  if (a.has("dynamic") && a.raw("dynamic") != json(false))
    fail("{}: dynamic weight quantization is not a stored format", a.where());
  if (w.strategy == "block") {
    const json& bs = a.raw("block_structure");
    if (bs.is_array() && bs.size() == 2 && bs[0].is_number_integer() && bs[1].is_number_integer()) {
      w.block_rows = bs[0].get<int64_t>();
      w.block_cols = bs[1].get<int64_t>();
    } else if (bs.is_string()) {
      // "128x128", as older compressed-tensors wrote it; std::stoll would throw
      // std::invalid_argument / out_of_range on anything else.
      const std::string s = bs.get<std::string>();
      const auto x = s.find('x');
      const auto number = [&](std::string_view part) {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
        if (part.empty() || ec != std::errc() || end != part.data() + part.size())
          fail("{}: block_structure '{}' (expected [rows, cols] or \"ROWSxCOLS\")", a.where(), s);
        return v;
      };
      if (x == std::string::npos)
        fail("{}: block_structure '{}' (expected [rows, cols])", a.where(), s);
      w.block_rows = number(std::string_view(s).substr(0, x));
      w.block_cols = number(std::string_view(s).substr(x + 1));
    } else {
      fail("{}: strategy 'block' needs block_structure [rows, cols]", a.where());
    }
    NIBBLE_CHECK(w.block_rows > 0 && w.block_cols > 0,
                 "{}: block_structure [{}, {}] must be positive", a.where(), w.block_rows,
                 w.block_cols);
  }
  if (a.has("actorder")) {
    const json& ao = a.raw("actorder");
    w.group_actorder = ao == json("group") || ao == json("dynamic") || ao == json(true);
  }
  return w;
}

ActQuant parse_ct_input_args(const Fields& a) {
  ActQuant act;
  const int bits = static_cast<int>(a.integer("num_bits", 8));
  const bool is_float = a.string("type", "int") == "float";
  const std::string strategy = a.string("strategy", "tensor");
  const bool dynamic = a.has("dynamic") && a.raw("dynamic") == json(true);
  if (bits != 8) fail("{}: {}-bit activation quantization is not supported", a.where(), bits);
  if (!a.boolean("symmetric", true) && is_float)
    fail("{}: asymmetric float activations are not supported", a.where());
  if (dynamic && strategy == "token") {
    act.kind = is_float ? ActQuantKind::DynamicPerTokenFp8 : ActQuantKind::DynamicPerTokenInt8;
  } else if (dynamic && strategy == "group" && is_float) {
    act.kind = ActQuantKind::DynamicPerTokenGroupFp8;
    act.group_size = a.integer("group_size", 128);
  } else if (!dynamic && strategy == "tensor") {
    act.kind = is_float ? ActQuantKind::StaticPerTensorFp8 : ActQuantKind::StaticPerTensorInt8;
  } else if (dynamic && strategy == "tensor") {
    // Dynamic per-tensor: treated as per-token, which is at least as accurate.
    act.kind = is_float ? ActQuantKind::DynamicPerTokenFp8 : ActQuantKind::DynamicPerTokenInt8;
  } else {
    fail("{}: activation strategy '{}' (dynamic={}) is not supported", a.where(), strategy,
         dynamic);
  }
  return act;
}

void parse_compressed_tensors(const Fields& f, QuantConfig& q) {
  const std::string status = f.string("quantization_status", "compressed");
  if (status != "compressed" && status != "frozen")
    fail("{}: quantization_status '{}' is not a saved checkpoint state (expected 'compressed')",
         f.where(), status);
  if (f.has("sparsity_config")) {
    const json& sp = f.raw("sparsity_config");
    const auto format = sp.is_object() ? sp.find("format") : sp.end();
    if (sp.is_object() && format != sp.end() && !format->is_string())
      fail("{}: sparsity_config format must be a string, got {}", f.where(), format->type_name());
    if (sp.is_object() && !sp.empty() && sp.value("format", "dense") != "dense")
      fail(
          "{}: sparsity_config format '{}' is not supported: sparse (bitmask / 2:4) "
          "compressed-tensors checkpoints are a legacy format that nibble does not load",
          f.where(), sp.value("format", std::string("?")));
  }
  if (f.has("transform_config")) {
    const json& tc = f.raw("transform_config");
    if (!(tc.is_object() && (tc.empty() || tc.value("config_groups", json::object()).empty())))
      fail(
          "{}: transform_config is set: the weights are rotated (Hadamard / SpinQuant-style "
          "transforms), which nibble does not apply, so running them would give wrong outputs",
          f.where());
  }
  const std::string global_format = f.string("format", "");
  for (const auto& entry : f.strings("ignore"))
    q.ct.ignore.push_back(make_matcher(entry, f.where() + " ignore"));
  if (f.has("kv_cache_scheme")) {
    const Fields kv(f.raw("kv_cache_scheme"), f.where() + " kv_cache_scheme");
    if (kv.string("type", "int") != "float" || kv.integer("num_bits", 8) != 8)
      fail("{}: only a float 8-bit kv_cache_scheme is supported", kv.where());
    q.ct.kv_cache_fp8 = true;
  }
  if (!f.has("config_groups") || !f.raw("config_groups").is_object())
    fail("{}: compressed-tensors config needs 'config_groups'", f.where());
  for (const auto& [name, value] : f.raw("config_groups").items()) {
    const std::string where = f.where() + " config_groups['" + name + "']";
    CtGroup g;
    g.name = name;
    const Fields gf(value, where);
    for (const auto& t : gf.strings("targets")) g.targets.push_back(make_matcher(t, where));
    g.format = gf.string("format", global_format);
    if (g.format.empty() || g.format == "mixed-precision")
      fail("{}: no format for this group (top-level format '{}')", where, global_format);
    if (g.format != "pack-quantized" && g.format != "int-quantized" &&
        g.format != "float-quantized" && g.format != "naive-quantized")
      fail(
          "{}: compressed-tensors format '{}' is not supported (supported: pack-quantized, "
          "int-quantized, float-quantized, naive-quantized)",
          where, g.format);
    if (!gf.has("weights")) fail("{}: no 'weights' quantization arguments", where);
    g.weights = parse_ct_weight_args(Fields(gf.raw("weights"), where + ".weights"));
    // vLLM reads input activations only for the formats that quantize them.
    if (gf.has("input_activations") && g.format != "pack-quantized")
      g.act =
          parse_ct_input_args(Fields(gf.raw("input_activations"), where + ".input_activations"));
    if (gf.has("output_activations"))
      fail("{}: output activation quantization is not supported", where);
    q.ct.groups.push_back(std::move(g));
  }
}

// --- fp8 / fbgemm_fp8 -----------------------------------------------------------------------

void parse_fp8(const Fields& f, QuantConfig& q, bool fbgemm) {
  Fp8Config& c = q.fp8;
  c.per_channel = fbgemm;
  if (!fbgemm) {
    const std::string scheme = f.string("activation_scheme", "dynamic");
    if (scheme != "static" && scheme != "dynamic")
      fail("{}: activation_scheme '{}' (expected static or dynamic)", f.where(), scheme);
    c.static_activations = scheme == "static";
    const std::string fmt_name = f.string("fmt", "e4m3");
    if (fmt_name != "e4m3")
      fail("{}: fp8 fmt '{}' is not supported (only e4m3)", f.where(), fmt_name);
    if (f.has("weight_block_size")) {
      const json& bs = f.raw("weight_block_size");
      if (!bs.is_array() || bs.size() != 2 || !bs[0].is_number_integer() ||
          !bs[1].is_number_integer() || bs[0].get<int64_t>() <= 0 || bs[1].get<int64_t>() <= 0)
        fail("{}: weight_block_size must be [rows, cols], got {}", f.where(), bs.dump());
      c.block_rows = bs[0].get<int64_t>();
      c.block_cols = bs[1].get<int64_t>();
      if (c.static_activations)
        fail("{}: block-wise fp8 (weight_block_size) needs activation_scheme 'dynamic'", f.where());
    }
  }
  for (const auto& key : {"ignored_layers", "modules_to_not_convert"})
    for (const auto& name : f.strings(key)) c.ignored.push_back(name);
}

// --- bitsandbytes ---------------------------------------------------------------------------

void parse_bitsandbytes(const Fields& f, QuantConfig& q) {
  // transformers writes both the public and the underscored key.
  const bool in_8bit = f.boolean("load_in_8bit", false) || f.boolean("_load_in_8bit", false);
  const bool in_4bit = f.boolean("load_in_4bit", false) || f.boolean("_load_in_4bit", false);
  if (in_8bit)
    fail(
        "{}: bitsandbytes load_in_8bit (LLM.int8 with fp16 outliers) is not supported; only "
        "4-bit (load_in_4bit) checkpoints load",
        f.where());
  if (!in_4bit)
    fail("{}: bitsandbytes config has neither load_in_4bit nor load_in_8bit", f.where());
  const std::string type = lower(f.string("bnb_4bit_quant_type", "fp4"));
  if (type != "nf4" && type != "fp4")
    fail("{}: bnb_4bit_quant_type '{}' (expected nf4 or fp4)", f.where(), type);
  q.bnb.params.fp4 = type == "fp4";
  q.bnb.double_quant = f.boolean("bnb_4bit_use_double_quant", false);
  q.bnb.skip_modules = f.strings("llm_int8_skip_modules");
}

// --- ModelOpt -------------------------------------------------------------------------------

const std::set<std::string> kModelOptFp8Algos = {"FP8", "FP8_PER_CHANNEL_PER_TOKEN"};
const std::set<std::string> kModelOptFp4Algos = {"NVFP4", "W4A16_NVFP4"};

void parse_modelopt(const json& config, const std::string& where, QuantConfig& q) {
  // Nested hf_quant_config.json form {"producer", "quantization": {...}} or the flat form.
  const bool nested = config.contains("quantization") && config["quantization"].is_object();
  const json& body = nested ? config["quantization"] : config;
  const Fields f(body, where);
  ModelOptConfig& m = q.modelopt;
  m.quant_algo = f.string("quant_algo");
  m.kv_cache_quant_algo = f.string("kv_cache_quant_algo");
  m.exclude_modules = f.strings(nested ? "exclude_modules" : "ignore");
  if (nested ? false : f.has("exclude_modules"))
    for (const auto& e : f.strings("exclude_modules")) m.exclude_modules.push_back(e);
  if (m.quant_algo.empty()) fail("{}: ModelOpt config has no quant_algo", where);
  if (kModelOptFp8Algos.count(m.quant_algo)) {
    q.checkpoint_method = "modelopt_fp8";
  } else if (kModelOptFp4Algos.count(m.quant_algo)) {
    q.checkpoint_method = "modelopt_fp4";
  } else if (m.quant_algo == "MIXED_PRECISION") {
    fail("{}: ModelOpt quant_algo MIXED_PRECISION (modelopt_mixed) is not supported yet", where);
  } else {
    fail(
        "{}: ModelOpt quant_algo '{}' is not supported (supported: FP8, "
        "FP8_PER_CHANNEL_PER_TOKEN, NVFP4, W4A16_NVFP4)",
        where, m.quant_algo);
  }
  if (!m.kv_cache_quant_algo.empty() && m.kv_cache_quant_algo != "FP8")
    fail("{}: kv_cache_quant_algo '{}' is not supported (only FP8)", where, m.kv_cache_quant_algo);
}

}  // namespace

bool ModuleMatcher::matches(const std::string& module) const {
  if (regex) return regex->match_prefix(module);
  return text == module;
}

const std::vector<std::string>& quantization_choices() {
  static const std::vector<std::string> choices = {"awq",
                                                   "fp8",
                                                   "mxfp8",
                                                   "gptq",
                                                   "marlin",
                                                   "gptq_marlin",
                                                   "awq_marlin",
                                                   "bitsandbytes",
                                                   "gguf",
                                                   "modelopt",
                                                   "modelopt_fp8",
                                                   "modelopt_fp4",
                                                   "nvfp4_online",
                                                   "modelopt_mixed",
                                                   "petit_nvfp4",
                                                   "w8a8_int8",
                                                   "w8a8_fp8",
                                                   "moe_wna16",
                                                   "w4afp8",
                                                   "mxfp4",
                                                   "auto-round",
                                                   "auto-round-int8",
                                                   "compressed-tensors",
                                                   "modelslim",
                                                   "mxfp_w4a8",
                                                   "quark",
                                                   "quark_int4fp8_moe",
                                                   "quark_mxfp4",
                                                   "mlx_q4",
                                                   "mlx_q8",
                                                   "unquant",
                                                   "humming"};
  return choices;
}

QuantConfig parse_quantization_config(const json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: quantization config must be a JSON object", source);
  QuantConfig q;
  q.source = source;
  if (const auto it = config.find("quant_method"); it != config.end() && !it->is_string())
    fail("{}: quant_method must be a string, got {}", source, it->type_name());
  const std::string method = lower(config.value("quant_method", std::string()));
  if (method.empty() || method.rfind("modelopt", 0) == 0) {
    parse_modelopt(config, source, q);
  } else if (method == "gptq") {
    parse_gptq(Fields(config, source), q);
    q.checkpoint_method = "gptq";
  } else if (method == "awq") {
    parse_awq(Fields(config, source), q);
    q.checkpoint_method = "awq";
  } else if (method == "compressed-tensors" || method == "compressed_tensors") {
    parse_compressed_tensors(Fields(config, source), q);
    q.checkpoint_method = "compressed-tensors";
  } else if (method == "fp8" || method == "fbgemm_fp8") {
    parse_fp8(Fields(config, source), q, method == "fbgemm_fp8");
    q.checkpoint_method = method;
  } else if (method == "bitsandbytes") {
    parse_bitsandbytes(Fields(config, source), q);
    q.checkpoint_method = "bitsandbytes";
  } else if (method == "auto-round" || method == "intel/auto-round") {
    fail("{}: auto-round checkpoints are not supported yet", source);
  } else {
    fail(
        "{}: unknown quant_method '{}' (supported: gptq, awq, compressed-tensors, fp8, "
        "fbgemm_fp8, modelopt, bitsandbytes)",
        source, method);
  }
  q.method = q.checkpoint_method;
  return q;
}

std::optional<QuantConfig> read_checkpoint_quantization(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  if (fs::exists(config_path)) {
    const json config = read_json_file(config_path);
    const std::string where = config_path.string();
    if (config.contains("quantization_config") && !config["quantization_config"].is_null())
      return parse_quantization_config(config["quantization_config"],
                                       where + " quantization_config");
    if (config.contains("text_config") && config["text_config"].is_object() &&
        config["text_config"].contains("quantization_config"))
      return parse_quantization_config(config["text_config"]["quantization_config"],
                                       where + " text_config.quantization_config");
    if (config.contains("compression_config") && !config["compression_config"].is_null()) {
      json cc = config["compression_config"];
      if (!cc.contains("quant_method")) cc["quant_method"] = "compressed-tensors";
      return parse_quantization_config(cc, where + " compression_config");
    }
  }
  if (fs::exists(dir / "hf_quant_config.json")) {
    const fs::path p = dir / "hf_quant_config.json";
    QuantConfig q;
    q.source = p.string();
    parse_modelopt(read_json_file(p), p.string(), q);
    q.method = q.checkpoint_method;
    return q;
  }
  for (const char* name : {"quantize_config.json", "quant_config.json"}) {
    const fs::path p = dir / name;
    if (!fs::exists(p)) continue;
    json side = read_json_file(p);
    if (!side.is_object()) fail("{}: must be a JSON object", p.string());
    if (!side.contains("quant_method")) {
      // Old AutoGPTQ files omit quant_method; AutoAWQ's carry w_bit / zero_point / version.
      const bool awq = side.contains("w_bit") || side.contains("zero_point") ||
                       side.contains("version") || std::string(name) == "quant_config.json";
      side["quant_method"] = awq ? "awq" : "gptq";
    }
    return parse_quantization_config(side, p.string());
  }
  return std::nullopt;
}

bool is_calibrated_method(const std::string& method) {
  const std::string m = lower(method);
  return m == "modelopt_fp8" || m == "modelopt_fp4";
}

std::optional<QuantConfig> apply_user_quantization(std::optional<QuantConfig> detected,
                                                   const std::string& user_method,
                                                   const std::string& torchao_config) {
  const std::string user = lower(user_method);
  if (!torchao_config.empty() && detected)
    fail(
        "--torchao-config {}: torchao quantizes the dense weights of an unquantized checkpoint, "
        "but {} is already quantized ({}); drop --torchao-config",
        torchao_config, detected->source, detected->checkpoint_method);
  if (user.empty() || user == "unquant") return detected;
  const auto& choices = quantization_choices();
  const auto& online = online_quantization_names();
  const bool known = std::find(choices.begin(), choices.end(), user) != choices.end() ||
                     std::find(online.begin(), online.end(), user) != online.end();
  if (!known)
    fail("--quantization: unknown quantization method '{}'; must be one of: {}, or nibble's {}",
         user_method, fmt::join(choices, ", "), fmt::join(online, ", "));
  if (!detected) {
    // An unquantized checkpoint: online methods quantize it at load (the caller asks
    // parse_online_method), ModelOpt's quantize-and-serve calibrates first
    // (is_calibrated_method); the others need weights quantized offline.
    if (std::find(online.begin(), online.end(), user) != online.end()) return std::nullopt;
    if (is_calibrated_method(user)) return std::nullopt;
    if (user == "modelopt")
      fail(
          "--quantization modelopt: the checkpoint has no quantization config; to calibrate and "
          "quantize it at load (ModelOpt quantize-and-serve) name the scheme: modelopt_fp8 or "
          "modelopt_fp4");
    fail(
        "--quantization {}: the checkpoint has no quantization config, and {} is not an "
        "online method (it loads weights quantized offline). Online methods: {}; or "
        "--torchao-config {}; or modelopt_fp8 / modelopt_fp4 (calibrated at load)",
        user, user, fmt::join(online, ", "), fmt::join(torchao_config_names(), " | "));
  }
  const std::string& have = detected->checkpoint_method;
  bool ok = user == have;
  // SGLang's override pass: the Marlin variants of a GPTQ / AWQ checkpoint.
  if (have == "gptq" && (user == "gptq_marlin" || user == "marlin")) ok = true;
  if (have == "awq" && (user == "awq_marlin" || user == "marlin")) ok = true;
  // compatible_quantization_methods.
  if (user == "modelopt" && have.rfind("modelopt", 0) == 0) ok = true;
  if (have == "compressed-tensors" && (user == "w8a8_int8" || user == "w8a8_fp8" ||
                                       user == "auto-round-int8" || user == "compressed_tensors"))
    ok = true;
  if (!ok)
    fail(
        "Quantization method specified in the model config ({}) does not match the "
        "quantization method specified in the quantization argument ({})",
        have, user);
  if (user == "w8a8_int8" || user == "w8a8_fp8" || user == "auto-round-int8") {
    // SGLang reuses the compressed-tensors tensors with its per-channel W8A8 path, so the
    // stored weights must be of that kind.
    const bool want_float = user == "w8a8_fp8";
    for (const auto& g : detected->ct.groups)
      if (g.weights.is_float != want_float || g.weights.bits != 8 || g.format == "pack-quantized")
        fail(
            "--quantization {}: the compressed-tensors checkpoint ({}) stores {} {}-bit weights "
            "({}), not {} W8A8 weights",
            user, detected->source, g.weights.is_float ? "float" : "int", g.weights.bits, g.format,
            want_float ? "fp8" : "int8");
    detected->method = user == "auto-round-int8" ? "w8a8_int8" : user;
  }
  return detected;
}

std::optional<QuantConfig> resolve_quantization(const fs::path& dir, const std::string& user_method,
                                                const std::string& torchao_config) {
  return apply_user_quantization(read_checkpoint_quantization(dir), user_method, torchao_config);
}

}  // namespace nibble::quant
