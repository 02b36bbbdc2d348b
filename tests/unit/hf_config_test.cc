#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/hf/generation_config.h"
#include "formats/hf/hf_config.h"
#include "formats/model_config.h"

namespace nibble {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Published config.json files, trimmed to the keys that matter.
const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

const char* kQwen25_7B = R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
  "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2",
  "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_sliding_window": false,
  "vocab_size": 152064})";

const char* kQwen3_06B = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "intermediate_size": 3072, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
  "vocab_size": 151936})";

const char* kMistral7B_v03 = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
  "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 32768})";

std::string parse_error(const json& config) {
  try {
    parse_hf_config(config, "test/config.json");
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("test/config.json"), std::string::npos) << message;
    return message;
  }
  return "";
}

TEST(HfConfig, Llama31WithLlama3RopeScaling) {
  const ModelConfig c = parse_hf_config(json::parse(kLlama31_8B), "llama");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.rope_type, "llama3");
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(HfConfig, Transformers5RopeParametersAndLegacyTypeKey) {
  json v5 = json::parse(kLlama31_8B);
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  v5.erase("torch_dtype");
  v5["dtype"] = "float16";
  v5["rope_parameters"] = {{"rope_type", "llama3"},
                           {"rope_theta", 500000.0},
                           {"factor", 32.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}};
  const ModelConfig c = parse_hf_config(v5, "v5");
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 32.0f);
  // Absent original_max_position_embeddings falls back to max_position_embeddings.
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 131072);
  EXPECT_EQ(c.torch_dtype, "float16");

  // Llama 2 era: "type" instead of "rope_type", no head_dim / kv heads / bos / eos keys.
  const json llama2 = {{"model_type", "llama"},
                       {"vocab_size", 32000},
                       {"hidden_size", 4096},
                       {"intermediate_size", 11008},
                       {"num_hidden_layers", 32},
                       {"num_attention_heads", 32},
                       {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}},
                       {"pad_token_id", -1}};
  const ModelConfig l2 = parse_hf_config(llama2, "llama2");
  EXPECT_EQ(l2.rope_scaling.rope_type, "linear");
  EXPECT_FLOAT_EQ(l2.rope_scaling.factor, 2.0f);
  EXPECT_EQ(l2.num_key_value_heads, 32);
  EXPECT_EQ(l2.head_dim, 128);
  EXPECT_EQ(l2.max_position_embeddings, 2048);
  EXPECT_FLOAT_EQ(l2.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(l2.rms_norm_eps, 1e-6f);
  EXPECT_EQ(l2.bos_token_id, 1);
  EXPECT_EQ(l2.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(l2.pad_token_id.has_value());
}

TEST(HfConfig, Qwen2HasImplicitAttentionBias) {
  const ModelConfig c = parse_hf_config(json::parse(kQwen25_7B), "qwen2");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(c.rope_scaling.rope_type, "default");
}

TEST(HfConfig, Qwen3HasQkNormAndExplicitHeadDim) {
  const ModelConfig c = parse_hf_config(json::parse(kQwen3_06B), "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.head_dim, 128);  // not hidden_size / heads = 64
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);  // integer-valued JSON number accepted
  // Absent head_dim: Qwen3Config's default 128, not hidden / heads.
  json no_head_dim = json::parse(kQwen3_06B);
  no_head_dim.erase("head_dim");
  EXPECT_EQ(parse_hf_config(no_head_dim, "q").head_dim, 128);
}

TEST(HfConfig, MistralDefaults) {
  const ModelConfig c = parse_hf_config(json::parse(kMistral7B_v03), "mistral");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.vocab_size, 32768);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.attention_bias);
  json minimal = json::parse(kMistral7B_v03);
  minimal.erase("num_key_value_heads");
  minimal.erase("max_position_embeddings");
  const ModelConfig d = parse_hf_config(minimal, "mistral");
  EXPECT_EQ(d.num_key_value_heads, 8);  // MistralConfig default, not num_attention_heads
  EXPECT_EQ(d.max_position_embeddings, 131072);
  // Mistral-Nemo: explicit head_dim that differs from hidden / heads.
  json nemo = json::parse(kMistral7B_v03);
  nemo["hidden_size"] = 5120;
  nemo["head_dim"] = 128;
  EXPECT_EQ(parse_hf_config(nemo, "nemo").head_dim, 128);
}

TEST(HfConfig, ErrorsNameTheFieldAndFile) {
  json bad = json::parse(kLlama31_8B);
  bad["model_type"] = "gpt2";
  std::string m = parse_error(bad);
  EXPECT_NE(m.find("'gpt2'"), std::string::npos) << m;
  EXPECT_NE(m.find("llama, mistral, qwen2, qwen3"), std::string::npos) << m;

  for (const char* field : {"hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "model_type"}) {
    json missing = json::parse(kLlama31_8B);
    missing.erase(field);
    m = parse_error(missing);
    EXPECT_NE(m.find(field), std::string::npos) << m;
  }
  bad = json::parse(kLlama31_8B);
  bad["num_key_value_heads"] = 5;
  EXPECT_NE(parse_error(bad).find("num_key_value_heads"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["hidden_size"] = "4096";
  EXPECT_NE(parse_error(bad).find("'hidden_size' must be an integer"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_NE(parse_error(bad).find("'yarn' is not supported"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["rope_scaling"].erase("low_freq_factor");
  EXPECT_NE(parse_error(bad).find("rope_scaling.low_freq_factor"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["hidden_act"] = "gelu";
  EXPECT_NE(parse_error(bad).find("hidden_act"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["hidden_size"] = 4100;
  bad.erase("head_dim");
  EXPECT_NE(parse_error(bad).find("not divisible"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["num_hidden_layers"] = 0;
  EXPECT_NE(parse_error(bad).find("num_hidden_layers must be positive"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["vocab_size"] = int64_t{1} << 40;
  EXPECT_NE(parse_error(bad).find("vocab_size"), std::string::npos);
  bad = json::parse(kLlama31_8B);
  bad["eos_token_id"] = 200000;
  EXPECT_NE(parse_error(bad).find("eos_token_id"), std::string::npos);
  EXPECT_NE(parse_error(json::array()).find("JSON object"), std::string::npos);
}

TEST(HfConfig, RoundTripsThroughConfigJson) {
  for (const char* text : {kLlama31_8B, kQwen25_7B, kQwen3_06B, kMistral7B_v03}) {
    const ModelConfig a = parse_hf_config(json::parse(text), "a");
    const json written = hf_config_to_json(a);
    const ModelConfig b = parse_hf_config(written, "b");
    EXPECT_EQ(a.model_type, b.model_type);
    EXPECT_EQ(a.vocab_size, b.vocab_size);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.intermediate_size, b.intermediate_size);
    EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
    EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
    EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
    EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.rope_scaling.rope_type, b.rope_scaling.rope_type);
    EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
    EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
              b.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(a.attention_bias, b.attention_bias);
    EXPECT_EQ(a.qk_norm, b.qk_norm);
    EXPECT_EQ(a.bos_token_id, b.bos_token_id);
    EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
    EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  }
  // Short decimal forms, not float noise.
  const json written = hf_config_to_json(parse_hf_config(json::parse(kLlama31_8B), "a"));
  EXPECT_EQ(written["rms_norm_eps"].dump(), "1e-05");
  EXPECT_EQ(written["architectures"][0], "LlamaForCausalLM");

  ModelConfig bad = parse_hf_config(json::parse(kQwen25_7B), "q");
  bad.attention_bias = false;  // qwen2 cannot express this
  EXPECT_THROW(hf_config_to_json(bad), Error);
}

class HfConfigDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / fmt::format("nibble_hf_config_{:08x}", std::random_device{}());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

TEST_F(HfConfigDir, LoadsFromDirectoryAndNamesFileOnError) {
  write("config.json", kQwen3_06B);
  EXPECT_EQ(load_hf_config(dir_).model_type, "qwen3");
  write("config.json", "{\"model_type\": \"llama\",");
  try {
    load_hf_config(dir_);
    ADD_FAILURE() << "accepted malformed config";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir_ / "config.json").string()), std::string::npos);
  }
  fs::remove(dir_ / "config.json");
  EXPECT_THROW(load_hf_config(dir_), Error);
}

TEST_F(HfConfigDir, GenerationConfig) {
  // Missing file: everything absent.
  const GenerationConfig none = load_generation_config(dir_);
  EXPECT_FALSE(none.temperature.has_value());
  EXPECT_TRUE(none.eos_token_ids.empty());

  write("generation_config.json", R"({"bos_token_id": 128000, "do_sample": true,
      "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9,
      "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.05, "max_new_tokens": 512,
      "pad_token_id": null, "transformers_version": "4.45.0"})");
  const GenerationConfig g = load_generation_config(dir_ / "generation_config.json");
  EXPECT_DOUBLE_EQ(*g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.9);
  EXPECT_EQ(*g.top_k, 20);
  EXPECT_DOUBLE_EQ(*g.min_p, 0.0);
  EXPECT_DOUBLE_EQ(*g.repetition_penalty, 1.05);
  EXPECT_EQ(*g.max_new_tokens, 512);
  EXPECT_TRUE(*g.do_sample);
  EXPECT_EQ(*g.bos_token_id, 128000);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(g.pad_token_id.has_value());

  write("generation_config.json", R"({"eos_token_id": 2})");
  EXPECT_EQ(load_generation_config(dir_).eos_token_ids, std::vector<int64_t>{2});

  for (const char* bad : {R"({"temperature": "hot"})", R"({"top_k": 1.5})", R"({"do_sample": 1})",
                          R"({"eos_token_id": ["x"]})", R"({"top_p": 2.0})", "[1]", "{oops"}) {
    write("generation_config.json", bad);
    try {
      load_generation_config(dir_);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("generation_config.json"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace nibble
