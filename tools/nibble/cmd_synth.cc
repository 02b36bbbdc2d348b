// `nibble synth`: a random-weight checkpoint with the exact shapes of a real
// model, for speed and memory work where the values do not matter (and the real
// weights cannot be fetched).
#include <cstdio>
#include <cstring>
#include <map>

#include "command.h"
#include "core/atomic_file.h"
#include "core/atomic_output.h"
#include "core/error.h"
#include "core/numeric.h"
#include "core/thread_pool.h"
#include "formats/hf/hf_config.h"
#include "formats/safetensors/safetensors_writer.h"

namespace nibble::cli {
namespace {

struct SynthOptions {
  std::string config;
  std::string out;
  std::string dtype = "bfloat16";
  uint64_t seed = 0;
  bool force = false;
};

// config.json of well-known models (the fields the architecture needs).
const std::map<std::string, nlohmann::json>& known_configs() {
  static const std::map<std::string, nlohmann::json> configs = {
      {"smollm2-135m",
       {{"model_type", "llama"},
        {"hidden_size", 576},
        {"intermediate_size", 1536},
        {"num_hidden_layers", 30},
        {"num_attention_heads", 9},
        {"num_key_value_heads", 3},
        {"vocab_size", 49152},
        {"max_position_embeddings", 8192},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 100000.0},
        {"tie_word_embeddings", true},
        {"bos_token_id", 1},
        {"eos_token_id", 2}}},
      {"llama-3.2-1b",
       {{"model_type", "llama"},
        {"hidden_size", 2048},
        {"intermediate_size", 8192},
        {"num_hidden_layers", 16},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"head_dim", 64},
        {"vocab_size", 128256},
        {"max_position_embeddings", 131072},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 500000.0},
        {"tie_word_embeddings", true},
        {"rope_scaling",
         {{"rope_type", "llama3"},
          {"factor", 32.0},
          {"low_freq_factor", 1.0},
          {"high_freq_factor", 4.0},
          {"original_max_position_embeddings", 8192}}},
        {"bos_token_id", 128000},
        {"eos_token_id", 128001}}},
      {"llama-3-8b",
       {{"model_type", "llama"},
        {"hidden_size", 4096},
        {"intermediate_size", 14336},
        {"num_hidden_layers", 32},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"vocab_size", 128256},
        {"max_position_embeddings", 8192},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 500000.0},
        {"tie_word_embeddings", false},
        {"bos_token_id", 128000},
        {"eos_token_id", 128001}}},
      {"llama-3.1-8b",
       {{"model_type", "llama"},
        {"hidden_size", 4096},
        {"intermediate_size", 14336},
        {"num_hidden_layers", 32},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"vocab_size", 128256},
        {"max_position_embeddings", 131072},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 500000.0},
        {"tie_word_embeddings", false},
        {"rope_scaling",
         {{"rope_type", "llama3"},
          {"factor", 8.0},
          {"low_freq_factor", 1.0},
          {"high_freq_factor", 4.0},
          {"original_max_position_embeddings", 8192}}},
        {"bos_token_id", 128000},
        {"eos_token_id", 128001}}},
      {"mistral-7b",
       {{"model_type", "mistral"},
        {"hidden_size", 4096},
        {"intermediate_size", 14336},
        {"num_hidden_layers", 32},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"vocab_size", 32768},
        {"max_position_embeddings", 32768},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 1000000.0},
        {"tie_word_embeddings", false},
        {"bos_token_id", 1},
        {"eos_token_id", 2}}},
      {"qwen2.5-7b",
       {{"model_type", "qwen2"},
        {"hidden_size", 3584},
        {"intermediate_size", 18944},
        {"num_hidden_layers", 28},
        {"num_attention_heads", 28},
        {"num_key_value_heads", 4},
        {"vocab_size", 152064},
        {"max_position_embeddings", 32768},
        {"rms_norm_eps", 1e-6},
        {"rope_theta", 1000000.0},
        {"tie_word_embeddings", false},
        {"bos_token_id", 151643},
        {"eos_token_id", 151645}}},
      {"qwen3-8b",
       {{"model_type", "qwen3"},
        {"hidden_size", 4096},
        {"intermediate_size", 12288},
        {"num_hidden_layers", 36},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"head_dim", 128},
        {"vocab_size", 151936},
        {"max_position_embeddings", 40960},
        {"rms_norm_eps", 1e-6},
        {"rope_theta", 1000000.0},
        {"tie_word_embeddings", false},
        {"bos_token_id", 151643},
        {"eos_token_id", 151645}}},
  };
  return configs;
}

std::vector<SafetensorsTensorSpec> tensor_specs(const ModelConfig& c, DType dtype) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  std::vector<SafetensorsTensorSpec> specs = {
      {"model.embed_tokens.weight", dtype, {c.vocab_size, h}}, {"model.norm.weight", dtype, {h}}};
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", dtype, {c.vocab_size, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    specs.push_back({p + "input_layernorm.weight", dtype, {h}});
    specs.push_back({p + "post_attention_layernorm.weight", dtype, {h}});
    specs.push_back({p + "self_attn.q_proj.weight", dtype, {q, h}});
    specs.push_back({p + "self_attn.k_proj.weight", dtype, {kv, h}});
    specs.push_back({p + "self_attn.v_proj.weight", dtype, {kv, h}});
    specs.push_back({p + "self_attn.o_proj.weight", dtype, {h, q}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", dtype, {q}});
      specs.push_back({p + "self_attn.k_proj.bias", dtype, {kv}});
      specs.push_back({p + "self_attn.v_proj.bias", dtype, {kv}});
    }
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", dtype, {c.head_dim}});
      specs.push_back({p + "self_attn.k_norm.weight", dtype, {c.head_dim}});
    }
    specs.push_back({p + "mlp.gate_proj.weight", dtype, {f, h}});
    specs.push_back({p + "mlp.up_proj.weight", dtype, {f, h}});
    specs.push_back({p + "mlp.down_proj.weight", dtype, {h, f}});
  }
  return specs;
}

// Uniform values with the standard deviation of a typical initialisation
// (0.02); norms are 1. A counter-based hash makes each element independent of
// thread scheduling.
std::vector<uint8_t> random_tensor(const SafetensorsTensorSpec& spec, uint64_t seed, bool is_norm) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  const size_t es = dtype_size(spec.dtype);
  std::vector<uint8_t> bytes(size_t(n) * es);
  const uint64_t salt = std::hash<std::string>{}(spec.name) ^ seed;
  ThreadPool::global().parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint64_t x = (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ull ^ salt;
      x ^= x >> 31;
      x *= 0xBF58476D1CE4E5B9ull;
      x ^= x >> 29;
      const float u = float(x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      const float v = is_norm ? 1.0f : (u * 2.0f - 1.0f) * 0.0346f;
      if (spec.dtype == DType::F32) {
        std::memcpy(&bytes[size_t(i) * 4], &v, 4);
      } else {
        const uint16_t hv = spec.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(&bytes[size_t(i) * 2], &hv, 2);
      }
    }
  });
  return bytes;
}

int run_synth(const SynthOptions& o) {
  nlohmann::json config_json;
  if (auto it = known_configs().find(o.config); it != known_configs().end()) {
    config_json = it->second;
  } else if (std::filesystem::exists(o.config)) {
    config_json = read_json_file(o.config);
  } else {
    std::string names;
    for (const auto& [name, _] : known_configs()) names += " " + name;
    fail("--config: '{}' is neither a known model ({}) nor a config.json file", o.config,
         names.substr(1));
  }
  const DType dtype =
      o.dtype == "float32"   ? DType::F32
      : o.dtype == "float16" ? DType::F16
      : o.dtype == "bfloat16"
          ? DType::BF16
          : (fail("--dtype: expected float32, bfloat16 or float16, got '{}'", o.dtype), DType::F32);
  config_json["torch_dtype"] = o.dtype;
  ModelConfig config = parse_hf_config(config_json, o.config);
  const std::filesystem::path out(o.out);
  AtomicOutputDirectory output(out, o.force);
  const std::filesystem::path& temp = output.path();
  SafetensorsWriter writer(temp / "model.safetensors", tensor_specs(config, dtype));
  for (const auto& spec : writer.order()) {
    const bool is_norm = spec.name.find("norm") != std::string::npos;
    writer.write(spec.name, random_tensor(spec, o.seed, is_norm));
  }
  writer.commit();
  write_file_atomic(temp / "config.json", hf_config_to_json(config).dump(2) + "\n");
  output.commit();
  std::printf("wrote %s (%s, random weights, no tokenizer)\n", out.string().c_str(),
              o.config.c_str());
  return 0;
}

NIBBLE_COMMAND(synth, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<SynthOptions>();
  app.description(
      "Write a random-weight checkpoint of a real architecture "
      "(for speed work)");
  app.add_option("--config", o->config,
                 "a known model (smollm2-135m, llama-3.2-1b, llama-3-8b, llama-3.1-8b, "
                 "mistral-7b, qwen2.5-7b, qwen3-8b) or a config.json path")
      ->required();
  app.add_option("--out,-o", o->out, "output directory")->required();
  app.add_option("--dtype", o->dtype, "float32, bfloat16 or float16")->capture_default_str();
  app.add_option("--seed", o->seed)->capture_default_str();
  app.add_flag("--force", o->force, "replace an existing output");
  return [o] { return run_synth(*o); };
});

}  // namespace
}  // namespace nibble::cli
