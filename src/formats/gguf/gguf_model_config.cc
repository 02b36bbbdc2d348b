#include "formats/gguf/gguf_model_config.h"

#include <algorithm>
#include <limits>

#include "core/error.h"
#include "formats/gguf/gguf_dequant.h"

namespace nibble::gguf {
namespace {

bool is_supported_arch(const std::string& arch) {
  return arch == "llama" || arch == "qwen2" || arch == "qwen3";
}

class MetadataReader {
 public:
  MetadataReader(const GgufFile& file, std::string arch) : file_(file), arch_(std::move(arch)) {}

  std::string key(std::string_view suffix) const { return arch_ + "." + std::string(suffix); }

  std::optional<int64_t> positive(std::string_view suffix) const {
    const std::string k = key(suffix);
    const auto v = file_.get_int(k);
    if (v && *v <= 0) fail("{}: key '{}' must be positive, found {}", where(), k, *v);
    return v;
  }
  int64_t required_positive(std::string_view suffix) const {
    const auto v = positive(suffix);
    if (!v) fail("{}: missing required key '{}'", where(), key(suffix));
    return *v;
  }
  std::optional<float> real(std::string_view suffix) const {
    const auto v = file_.get_float(key(suffix));
    if (!v) return std::nullopt;
    return static_cast<float>(*v);
  }
  std::string where() const { return file_.path().string(); }

 private:
  const GgufFile& file_;
  std::string arch_;
};

std::optional<int64_t> token_id(const GgufFile& file, std::string_view key) {
  const auto v = file.get_int(key);
  if (v && *v < 0) fail("{}: key '{}' is negative ({})", file.path().string(), key, *v);
  return v;
}

void read_rope_scaling(const GgufFile& file, const MetadataReader& meta, ModelConfig& config) {
  RopeScaling& scaling = config.rope_scaling;
  if (const auto type = file.get_string(meta.key("rope.scaling.type"))) {
    if (*type == "linear" || *type == "yarn" || *type == "longrope") {
      scaling.rope_type = *type;
    } else if (*type != "none") {
      fail("{}: key '{}': unknown rope scaling type '{}'", meta.where(),
           meta.key("rope.scaling.type"), *type);
    }
  } else if (const auto linear = meta.real("rope.scale_linear")) {
    // Older files carry only the linear factor.
    scaling.rope_type = "linear";
    scaling.factor = *linear;
  }
  if (const auto factor = meta.real("rope.scaling.factor")) scaling.factor = *factor;
  if (const auto original = meta.positive("rope.scaling.original_context_length")) {
    scaling.original_max_position_embeddings = *original;
  }
  // Llama 3.x files carry their RoPE scaling as per-frequency factors (rope_freqs) instead
  // of metadata; its largest entry is the scaling factor, the other parameters keep their
  // Llama 3.1 defaults (low 1, high 4, original context 8192).
  if (const TensorInfo* freqs = file.find_tensor("rope_freqs.weight");
      freqs && scaling.rope_type == "default" && can_dequantize(freqs->type)) {
    std::vector<float> factors(freqs->n_elements());
    dequantize_row(freqs->type, freqs->data, factors.data(), int64_t(factors.size()));
    if (!factors.empty()) {
      scaling.rope_type = "llama3";
      scaling.factor = *std::max_element(factors.begin(), factors.end());
    }
  }
}

}  // namespace

std::string gguf_architecture_for(const std::string& model_type) {
  if (model_type == "llama" || model_type == "mistral") return "llama";
  if (model_type == "qwen2" || model_type == "qwen3") return model_type;
  fail("model type '{}' cannot be written as GGUF (supported: llama, mistral, qwen2, qwen3)",
       model_type);
}

ModelConfig model_config_from_gguf(const GgufFile& file) {
  const std::string where = file.path().string();
  const auto arch = file.get_string("general.architecture");
  if (!arch) fail("{}: missing required key 'general.architecture'", where);
  if (!is_supported_arch(*arch)) {
    fail("{}: general.architecture '{}' is not supported (supported: llama, qwen2, qwen3)", where,
         *arch);
  }
  const MetadataReader meta(file, *arch);
  ModelConfig config;
  config.model_type = *arch;
  config.hidden_size = meta.required_positive("embedding_length");
  config.intermediate_size = meta.required_positive("feed_forward_length");
  config.num_hidden_layers = meta.required_positive("block_count");
  config.num_attention_heads = meta.required_positive("attention.head_count");
  config.num_key_value_heads =
      meta.positive("attention.head_count_kv").value_or(config.num_attention_heads);
  if (const auto ctx = meta.positive("context_length")) config.max_position_embeddings = *ctx;
  if (const auto eps = meta.real("attention.layer_norm_rms_epsilon")) config.rms_norm_eps = *eps;
  if (const auto theta = meta.real("rope.freq_base")) config.rope_theta = *theta;

  if (const auto key_length = meta.positive("attention.key_length")) {
    config.head_dim = *key_length;
  } else if (const auto rope_dims = meta.positive("rope.dimension_count")) {
    config.head_dim = *rope_dims;
  } else {
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  read_rope_scaling(file, meta, config);

  if (file.find("tokenizer.ggml.tokens")) {
    config.vocab_size = static_cast<int64_t>(*file.get_array_size("tokenizer.ggml.tokens"));
  } else if (const auto vocab = meta.positive("vocab_size")) {
    config.vocab_size = *vocab;
  } else if (const TensorInfo* embd = file.find_tensor("token_embd.weight");
             embd && embd->ne.size() == 2) {
    config.vocab_size = static_cast<int64_t>(embd->ne[1]);
  } else {
    fail(
        "{}: cannot tell the vocabulary size (no tokenizer.ggml.tokens, {} or "
        "token_embd.weight)",
        where, meta.key("vocab_size"));
  }

  const bool has_tensors = !file.tensors().empty();
  config.tie_word_embeddings = has_tensors && file.find_tensor("output.weight") == nullptr;
  config.attention_bias =
      has_tensors ? file.find_tensor("blk.0.attn_q.bias") != nullptr : *arch == "qwen2";
  config.qk_norm =
      has_tensors ? file.find_tensor("blk.0.attn_q_norm.weight") != nullptr : *arch == "qwen3";

  config.bos_token_id = token_id(file, "tokenizer.ggml.bos_token_id");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    if (const auto id = token_id(file, key)) {
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), *id) ==
          config.eos_token_ids.end()) {
        config.eos_token_ids.push_back(*id);
      }
    }
  }
  config.pad_token_id = token_id(file, "tokenizer.ggml.padding_token_id");
  return config;
}

std::vector<std::pair<std::string, MetaValue>> gguf_metadata_from_model_config(
    const ModelConfig& config) {
  const std::string arch = gguf_architecture_for(config.model_type);
  std::vector<std::pair<std::string, MetaValue>> out;
  auto u32 = [&](std::string key, int64_t v) {
    if (v < 0 || v > int64_t(std::numeric_limits<uint32_t>::max())) {
      fail("model config: value {} for GGUF key '{}' does not fit UINT32", v, key);
    }
    out.emplace_back(std::move(key), MetaValue{ValueType::UINT32, ValueType::UINT32, v});
  };
  auto f32 = [&](std::string key, float v) {
    out.emplace_back(std::move(key),
                     MetaValue{ValueType::FLOAT32, ValueType::UINT32, static_cast<double>(v)});
  };
  auto str = [&](std::string key, std::string v) {
    out.emplace_back(std::move(key), MetaValue{ValueType::STRING, ValueType::UINT32, v});
  };
  str("general.architecture", arch);
  u32(arch + ".block_count", config.num_hidden_layers);
  u32(arch + ".context_length", config.max_position_embeddings);
  u32(arch + ".embedding_length", config.hidden_size);
  u32(arch + ".feed_forward_length", config.intermediate_size);
  u32(arch + ".attention.head_count", config.num_attention_heads);
  u32(arch + ".attention.head_count_kv", config.num_key_value_heads);
  f32(arch + ".rope.freq_base", config.rope_theta);
  f32(arch + ".attention.layer_norm_rms_epsilon", config.rms_norm_eps);
  const int64_t head_dim = config.head_dim > 0 ? config.head_dim
                           : config.num_attention_heads > 0
                               ? config.hidden_size / config.num_attention_heads
                               : 0;
  if (config.num_attention_heads > 0 &&
      head_dim * config.num_attention_heads != config.hidden_size) {
    u32(arch + ".attention.key_length", head_dim);
    u32(arch + ".attention.value_length", head_dim);
  }
  u32(arch + ".rope.dimension_count", head_dim);
  u32(arch + ".vocab_size", config.vocab_size);
  const RopeScaling& scaling = config.rope_scaling;
  if (scaling.rope_type == "linear" || scaling.rope_type == "yarn") {
    str(arch + ".rope.scaling.type", scaling.rope_type);
    f32(arch + ".rope.scaling.factor", scaling.factor);
    if (scaling.rope_type == "yarn") {
      u32(arch + ".rope.scaling.original_context_length", scaling.original_max_position_embeddings);
    }
  }
  // "llama3" scaling is expressed by a rope_freqs tensor, which the converter writes.
  if (config.bos_token_id) u32("tokenizer.ggml.bos_token_id", *config.bos_token_id);
  if (!config.eos_token_ids.empty()) u32("tokenizer.ggml.eos_token_id", config.eos_token_ids[0]);
  if (config.pad_token_id) u32("tokenizer.ggml.padding_token_id", *config.pad_token_id);
  return out;
}

}  // namespace nibble::gguf
