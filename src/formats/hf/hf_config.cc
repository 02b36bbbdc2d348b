#include "formats/hf/hf_config.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace nibble {
namespace {

using nlohmann::json;

// Per-architecture behaviour that config.json does not spell out: transformers' class defaults
// and what each modeling file hard-codes.
struct ArchTraits {
  std::string_view model_type;
  std::string_view architecture;  // the "architectures" entry written by hf_config_to_json
  // num_key_value_heads when the key is absent (transformers class default; 0 = same as heads).
  int64_t default_kv_heads;
  // head_dim when the key is absent (0 = hidden_size / num_attention_heads).
  int64_t default_head_dim;
  int64_t default_max_position_embeddings;
  std::optional<int64_t> default_bos;
  std::optional<int64_t> default_eos;
  bool reads_attention_bias_key;  // else attention_bias is fixed to implicit_attention_bias
  bool implicit_attention_bias;
  bool qk_norm;
};

const std::vector<ArchTraits>& arch_table() {
  static const std::vector<ArchTraits> table = {
      // LlamaConfig: num_key_value_heads None -> heads, bos 1, eos 2.
      {"llama", "LlamaForCausalLM", 0, 0, 2048, 1, 2, true, false, false},
      // MistralConfig: num_key_value_heads defaults to 8; q/k/v/o never have biases.
      {"mistral", "MistralForCausalLM", 8, 0, 4096 * 32, 1, 2, false, false, false},
      // Qwen2Config: kv heads default 32; Qwen2Attention hard-codes bias=True on q/k/v.
      {"qwen2", "Qwen2ForCausalLM", 32, 0, 32768, std::nullopt, std::nullopt, false, true, false},
      // Qwen3Config: head_dim defaults to 128 regardless of hidden size; q/k RMSNorm always.
      {"qwen3", "Qwen3ForCausalLM", 32, 128, 32768, std::nullopt, std::nullopt, true, false, true},
  };
  return table;
}

const ArchTraits* find_arch(std::string_view model_type) {
  for (const auto& arch : arch_table())
    if (arch.model_type == model_type) return &arch;
  return nullptr;
}

std::string supported_list() {
  return fmt::format("{}", fmt::join(supported_hf_model_types(), ", "));
}

// Accessors that treat an explicit null like an absent key, as transformers does (None).
class ConfigReader {
 public:
  ConfigReader(const json& object, const std::string& source, std::string prefix = "")
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  const json* get(std::string_view key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(std::string_view key) const { return get(key) != nullptr; }

  int64_t integer(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) fail("{}: missing required field '{}{}'", source_, prefix_, key);
    return as_integer(*v, key);
  }
  int64_t integer(std::string_view key, int64_t fallback) const {
    const json* v = get(key);
    return v == nullptr ? fallback : as_integer(*v, key);
  }
  std::optional<int64_t> optional_integer(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) return std::nullopt;
    return as_integer(*v, key);
  }
  double number(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) fail("{}: missing required field '{}{}'", source_, prefix_, key);
    return as_number(*v, key);
  }
  double number(std::string_view key, double fallback) const {
    const json* v = get(key);
    return v == nullptr ? fallback : as_number(*v, key);
  }
  bool boolean(std::string_view key, bool fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean())
      fail("{}: field '{}{}' must be true or false, got {}", source_, prefix_, key, v->dump());
    return v->get<bool>();
  }
  std::string string(std::string_view key, std::string fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_string())
      fail("{}: field '{}{}' must be a string, got {}", source_, prefix_, key, v->dump());
    return v->get<std::string>();
  }
  // An int or a list of ints (eos_token_id).
  std::vector<int64_t> integer_list(std::string_view key) const {
    const json* v = get(key);
    std::vector<int64_t> out;
    if (v == nullptr) return out;
    if (v->is_array()) {
      for (const auto& item : *v) out.push_back(as_integer(item, key));
    } else {
      out.push_back(as_integer(*v, key));
    }
    return out;
  }

 private:
  int64_t as_integer(const json& v, std::string_view key) const {
    if (!v.is_number_integer())
      fail("{}: field '{}{}' must be an integer, got {}", source_, prefix_, key, v.dump());
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("{}: field '{}{}' = {} is out of range", source_, prefix_, key, v.dump());
    return v.get<int64_t>();
  }
  double as_number(const json& v, std::string_view key) const {
    if (!v.is_number())
      fail("{}: field '{}{}' must be a number, got {}", source_, prefix_, key, v.dump());
    return v.get<double>();
  }

  const json& object_;
  const std::string& source_;
  std::string prefix_;
};

// transformers 4.x stores rope settings as top-level "rope_theta" plus "rope_scaling";
// 5.x writes "rope_parameters" with rope_theta inside. rope_scaling wins when both exist
// (transformers: `rope_scaling or rope_parameters`).
void parse_rope(const ConfigReader& top, const std::string& source, ModelConfig& out) {
  const json* params = top.get("rope_scaling");
  std::string key = "rope_scaling";
  if (params == nullptr) {
    params = top.get("rope_parameters");
    key = "rope_parameters";
  }
  double theta = top.number("rope_theta", 10000.0);
  if (params == nullptr) {
    out.rope_theta = static_cast<float>(theta);
    return;
  }
  if (!params->is_object())
    fail("{}: field '{}' must be an object, got {}", source, key, params->dump());
  // Per-layer-type nesting (transformers 5 for models with layer_types): these architectures
  // use the full-attention entry for every layer.
  if (const auto nested = params->find("full_attention");
      nested != params->end() && nested->is_object()) {
    params = &*nested;
    key += ".full_attention";
  }
  const ConfigReader rope(*params, source, key + ".");
  theta = rope.number("rope_theta", theta);
  out.rope_theta = static_cast<float>(theta);
  std::string type = rope.string("rope_type", rope.string("type", "default"));
  RopeScaling& rs = out.rope_scaling;
  rs = RopeScaling{};
  if (type == "default") return;
  if (type == "linear") {
    rs.rope_type = type;
    rs.factor = static_cast<float>(rope.number("factor"));
    return;
  }
  if (type == "llama3") {
    rs.rope_type = type;
    rs.factor = static_cast<float>(rope.number("factor"));
    rs.low_freq_factor = static_cast<float>(rope.number("low_freq_factor"));
    rs.high_freq_factor = static_cast<float>(rope.number("high_freq_factor"));
    rs.original_max_position_embeddings =
        rope.integer("original_max_position_embeddings", out.max_position_embeddings);
    return;
  }
  fail("{}: {}.rope_type '{}' is not supported (supported: default, linear, llama3)", source, key,
       type);
}

// The double closest to the float's shortest decimal form, so 1e-5f is written as 1e-05 and
// not 9.999999747378752e-06.
double float_for_json(float v) { return std::stod(fmt::format("{}", v)); }

}  // namespace

const std::vector<std::string_view>& supported_hf_model_types() {
  static const std::vector<std::string_view> types = [] {
    std::vector<std::string_view> t;
    for (const auto& arch : arch_table()) t.push_back(arch.model_type);
    return t;
  }();
  return types;
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read failed", path.string());
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

ModelConfig parse_hf_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object())
    fail("{}: config must be a JSON object, got {}", source, config.type_name());
  const ConfigReader r(config, source);
  ModelConfig out;
  if (!r.has("model_type"))
    fail("{}: missing required field 'model_type' (supported: {})", source, supported_list());
  out.model_type = r.string("model_type", "");
  const ArchTraits* arch = find_arch(out.model_type);
  if (arch == nullptr)
    fail("{}: unsupported model_type '{}' (supported: {})", source, out.model_type,
         supported_list());

  out.vocab_size = r.integer("vocab_size");
  out.hidden_size = r.integer("hidden_size");
  out.intermediate_size = r.integer("intermediate_size");
  out.num_hidden_layers = r.integer("num_hidden_layers");
  out.num_attention_heads = r.integer("num_attention_heads");
  if (out.num_attention_heads <= 0)
    fail("{}: num_attention_heads must be positive, got {}", source, out.num_attention_heads);
  // Absent and null differ in transformers: null means "same as heads", absent means the class
  // default (which is a fixed number for mistral and qwen).
  if (!config.contains("num_key_value_heads")) {
    out.num_key_value_heads =
        arch->default_kv_heads ? arch->default_kv_heads : out.num_attention_heads;
  } else {
    out.num_key_value_heads = r.integer("num_key_value_heads", out.num_attention_heads);
  }
  if (r.has("head_dim")) {
    out.head_dim = r.integer("head_dim");
  } else if (!config.contains("head_dim") && arch->default_head_dim != 0) {
    out.head_dim = arch->default_head_dim;
  } else {
    if (out.hidden_size % out.num_attention_heads != 0)
      fail(
          "{}: hidden_size {} is not divisible by num_attention_heads {} and head_dim is not given",
          source, out.hidden_size, out.num_attention_heads);
    out.head_dim = out.hidden_size / out.num_attention_heads;
  }
  out.max_position_embeddings =
      r.integer("max_position_embeddings", arch->default_max_position_embeddings);
  out.rms_norm_eps = static_cast<float>(r.number("rms_norm_eps", 1e-6));
  parse_rope(r, source, out);
  out.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  out.attention_bias = arch->reads_attention_bias_key ? r.boolean("attention_bias", false)
                                                      : arch->implicit_attention_bias;
  out.qk_norm = arch->qk_norm;
  // transformers 5 writes "dtype", 4.x "torch_dtype".
  out.torch_dtype = r.string("dtype", r.string("torch_dtype", out.torch_dtype));

  out.bos_token_id =
      config.contains("bos_token_id") ? r.optional_integer("bos_token_id") : arch->default_bos;
  if (config.contains("eos_token_id")) {
    out.eos_token_ids = r.integer_list("eos_token_id");
  } else if (arch->default_eos) {
    out.eos_token_ids = {*arch->default_eos};
  }
  out.pad_token_id = r.optional_integer("pad_token_id");
  // Old LLaMA configs use -1 for "no pad token".
  if (out.pad_token_id && *out.pad_token_id < 0) out.pad_token_id.reset();

  // Features these architectures allow but nibble does not implement: refuse rather than
  // produce wrong output.
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu")
    fail("{}: hidden_act '{}' is not supported for {} (only 'silu')", source, act, out.model_type);
  if (r.boolean("mlp_bias", false)) fail("{}: mlp_bias = true is not supported", source);
  // Sliding-window attention is not modelled by ModelConfig; it only changes results past the
  // window, so warn instead of refusing (Mistral 7B v0.1 sets 4096).
  if (out.model_type == "mistral") {
    const int64_t window =
        config.contains("sliding_window") ? r.integer("sliding_window", 0) : 4096;
    if (window > 0 && window < out.max_position_embeddings)
      spdlog::warn(
          "{}: sliding_window {} is ignored; prompts longer than it will differ from "
          "transformers",
          source, window);
  } else if (out.model_type == "qwen2" || out.model_type == "qwen3") {
    if (r.boolean("use_sliding_window", false))
      spdlog::warn("{}: use_sliding_window is ignored (full attention on every layer)", source);
  }
  validate_model_config(out, source);
  return out;
}

ModelConfig load_hf_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  if (!std::filesystem::exists(file)) fail("{}: config.json not found", file.string());
  return parse_hf_config(read_json_file(file), file.string());
}

nlohmann::json hf_config_to_json(const ModelConfig& config) {
  const ArchTraits* arch = find_arch(config.model_type);
  const std::string source = fmt::format("config for model_type '{}'", config.model_type);
  if (arch == nullptr)
    fail("cannot write config.json: unsupported model_type '{}' (supported: {})", config.model_type,
         supported_list());
  validate_model_config(config, source);
  if (!arch->reads_attention_bias_key && config.attention_bias != arch->implicit_attention_bias)
    fail("{}: attention_bias = {} cannot be expressed in config.json ({} fixes it to {})", source,
         config.attention_bias, config.model_type, arch->implicit_attention_bias);
  if (config.qk_norm != arch->qk_norm)
    fail("{}: qk_norm = {} cannot be expressed in config.json ({} fixes it to {})", source,
         config.qk_norm, config.model_type, arch->qk_norm);

  json out = json::object();
  out["architectures"] = {arch->architecture};
  out["model_type"] = config.model_type;
  out["vocab_size"] = config.vocab_size;
  out["hidden_size"] = config.hidden_size;
  out["intermediate_size"] = config.intermediate_size;
  out["num_hidden_layers"] = config.num_hidden_layers;
  out["num_attention_heads"] = config.num_attention_heads;
  out["num_key_value_heads"] = config.num_key_value_heads;
  out["head_dim"] = config.head_dim;
  out["max_position_embeddings"] = config.max_position_embeddings;
  out["rms_norm_eps"] = float_for_json(config.rms_norm_eps);
  out["rope_theta"] = float_for_json(config.rope_theta);
  const RopeScaling& rs = config.rope_scaling;
  if (rs.rope_type == "default") {
    out["rope_scaling"] = nullptr;
  } else {
    json scaling = {{"rope_type", rs.rope_type}, {"factor", float_for_json(rs.factor)}};
    if (rs.rope_type == "llama3") {
      scaling["low_freq_factor"] = float_for_json(rs.low_freq_factor);
      scaling["high_freq_factor"] = float_for_json(rs.high_freq_factor);
      scaling["original_max_position_embeddings"] = rs.original_max_position_embeddings;
    }
    out["rope_scaling"] = std::move(scaling);
  }
  out["hidden_act"] = "silu";
  out["tie_word_embeddings"] = config.tie_word_embeddings;
  if (arch->reads_attention_bias_key) out["attention_bias"] = config.attention_bias;
  if (config.model_type == "llama") out["mlp_bias"] = false;
  if (config.model_type == "mistral") out["sliding_window"] = nullptr;
  if (config.model_type == "qwen2" || config.model_type == "qwen3")
    out["use_sliding_window"] = false;
  out["torch_dtype"] = config.torch_dtype;
  out["bos_token_id"] = config.bos_token_id ? json(*config.bos_token_id) : json(nullptr);
  if (config.eos_token_ids.empty()) {
    out["eos_token_id"] = nullptr;
  } else if (config.eos_token_ids.size() == 1) {
    out["eos_token_id"] = config.eos_token_ids[0];
  } else {
    out["eos_token_id"] = config.eos_token_ids;
  }
  out["pad_token_id"] = config.pad_token_id ? json(*config.pad_token_id) : json(nullptr);
  return out;
}

}  // namespace nibble
