#include "model/loader.h"

#include <cctype>
#include <cstdlib>
#include <fstream>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "formats/gguf/gguf_checkpoint.h"
#include "formats/gguf/gguf_model_config.h"
#include "formats/hf/generation_config.h"
#include "formats/hf/hf_checkpoint.h"
#include "formats/hf/hf_config.h"
#include "model/gguf_names.h"
#include "model/linear_builder.h"
#include "model/llama.h"
#include "quant/online.h"
#include "quant/quantized_checkpoint.h"
#include "quant/resolve.h"

namespace nibble {
namespace {

// End-of-turn markers of common chat formats. Chat models end a reply with these rather
// than with the tokenizer's eos token (SmolLM2's GGUF names <|im_start|> as eos, for one).
constexpr const char* kEndOfTurnTokens[] = {"<|im_end|>",    "<|eot_id|>",    "<|end_of_text|>",
                                            "<end_of_turn>", "<|endoftext|>", "</s>",
                                            "<|end|>"};

void add_stop_id(std::vector<int32_t>& ids, int64_t id, int64_t vocab) {
  if (id < 0 || id >= vocab) return;
  for (int32_t existing : ids)
    if (existing == id) return;
  ids.push_back(static_cast<int32_t>(id));
}

void finish_tokenizer_fields(ModelSource& s) {
  for (int64_t id : s.config.eos_token_ids) add_stop_id(s.stop_ids, id, s.config.vocab_size);
  if (!s.tokenizer) return;
  const Tokenizer& tok = *s.tokenizer;
  if (auto bos = tok.bos_id()) s.bos_token = tok.id_to_token(*bos);
  if (auto eos = tok.eos_id()) {
    s.eos_token = tok.id_to_token(*eos);
    add_stop_id(s.stop_ids, *eos, s.config.vocab_size);
  }
  // Only add end-of-turn markers the chat template actually uses, so a base model's text is
  // not cut at a token it merely happens to have.
  for (const char* marker : kEndOfTurnTokens) {
    if (s.chat_template.find(marker) == std::string::npos) continue;
    if (auto id = tok.token_to_id(marker)) add_stop_id(s.stop_ids, *id, s.config.vocab_size);
  }
}

std::string read_chat_template(const std::filesystem::path& dir) {
  const auto path = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return {};
  const nlohmann::json config = read_json_file(path);
  if (!config.contains("chat_template")) {
    // Newer transformers keep the template in its own file.
    const auto jinja = dir / "chat_template.jinja";
    if (!std::filesystem::exists(jinja)) return {};
    std::ifstream in(jinja, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  const auto& tmpl = config["chat_template"];
  if (tmpl.is_string()) return tmpl.get<std::string>();
  // A list of named templates: use "default".
  if (tmpl.is_array()) {
    for (const auto& entry : tmpl)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template"))
        return entry["template"].get<std::string>();
  }
  fail("{}: chat_template is neither a string nor a list with a 'default' entry", path.string());
}

ModelSource open_hf_dir(const std::filesystem::path& dir, const std::string& quantization,
                        const std::string& torchao_config) {
  ModelSource s;
  s.path = dir;
  s.format = "hf";
  s.config = load_hf_config(dir / "config.json");
  const GenerationConfig gen = load_generation_config(dir / "generation_config.json");
  if (gen.temperature) s.generation.temperature = static_cast<float>(*gen.temperature);
  if (gen.top_p) s.generation.top_p = static_cast<float>(*gen.top_p);
  if (gen.top_k) s.generation.top_k = static_cast<int32_t>(*gen.top_k);
  if (gen.min_p) s.generation.min_p = static_cast<float>(*gen.min_p);
  if (gen.repetition_penalty)
    s.generation.repetition_penalty = static_cast<float>(*gen.repetition_penalty);
  if (gen.do_sample && !*gen.do_sample) s.generation.temperature = 0.0f;
  s.raw_checkpoint = open_hf_checkpoint(dir);
  // Pre-quantized layers appear as dense `<p>.weight` for code that reads them as f32; the model
  // builder asks the wrapper for the quantized form.
  s.checkpoint = quant::wrap_quantized_checkpoint(s.raw_checkpoint, dir, quantization);
  if (const auto* q = dynamic_cast<const quant::QuantizedCheckpoint*>(s.checkpoint.get())) {
    NIBBLE_CHECK(torchao_config.empty(),
                 "{}: --torchao-config {} needs an unquantized checkpoint, this one is {}",
                 dir.string(), torchao_config, q->config().method);
    s.quantization = q->config().method;
  } else if (quant::is_calibrated_method(quantization)) {
    NIBBLE_CHECK(torchao_config.empty(),
                 "{}: --quantization {} and --torchao-config {} both quantize the checkpoint; "
                 "give one",
                 dir.string(), quantization, torchao_config);
    std::string method = quantization;
    for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    s.quantization = method;
    s.calibrated_quantization = true;
  } else if (auto online = quant::parse_online_method(quantization, torchao_config)) {
    s.quantization = online->name;
    s.online_quantization = true;
  }
  s.quantization_flag = quantization;
  s.torchao_config = torchao_config;
  // Random-weight checkpoints (`nibble synth`) carry no tokenizer; they run on token ids.
  if (std::filesystem::exists(dir / "tokenizer.json")) s.tokenizer = Tokenizer::from_hf_dir(dir);
  s.chat_template = read_chat_template(dir);
  for (int64_t id : gen.eos_token_ids) add_stop_id(s.stop_ids, id, s.config.vocab_size);
  finish_tokenizer_fields(s);
  return s;
}

ModelSource open_gguf(const std::filesystem::path& path, const std::string& quantization,
                      const std::string& torchao_config) {
  // SGLang names GGUF's method "gguf"; the file's block types are what runs.
  NIBBLE_CHECK(quantization.empty() || quantization == "gguf" || quantization == "unquant",
               "{}: --quantization {}: a GGUF file is already quantized (leave the flag out or "
               "pass --quantization gguf)",
               path.string(), quantization);
  NIBBLE_CHECK(torchao_config.empty(),
               "{}: --torchao-config {} needs an unquantized HF checkpoint, not a GGUF file",
               path.string(), torchao_config);
  ModelSource s;
  s.quantization = "gguf";
  s.path = path;
  s.format = "gguf";
  auto checkpoint = gguf::open_gguf_checkpoint(path);
  s.gguf = checkpoint->shared_file();
  s.config = gguf::model_config_from_gguf(*s.gguf);
  const std::string arch = s.gguf->get_string("general.architecture").value_or("");
  s.raw_checkpoint = std::shared_ptr<Checkpoint>(std::move(checkpoint));
  s.checkpoint = gguf_as_hf_checkpoint(s.raw_checkpoint, s.config, arch);
  s.tokenizer = Tokenizer::from_gguf(*s.gguf);
  s.chat_template = s.gguf->get_string("tokenizer.chat_template").value_or("");
  finish_tokenizer_fields(s);
  return s;
}

}  // namespace

ModelSource open_model_source(const std::filesystem::path& path, const std::string& quantization,
                              const std::string& torchao_config) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    NIBBLE_CHECK(std::filesystem::exists(path / "config.json"),
                 "{}: not a model directory (no config.json)", path.string());
    return open_hf_dir(path, quantization, torchao_config);
  }
  NIBBLE_CHECK(std::filesystem::exists(path, ec), "{}: no such file or directory", path.string());
  return open_gguf(path, quantization, torchao_config);
}

std::unique_ptr<Model> build_model(const ModelSource& source, ComputeType compute) {
  if (source.model_builder) return source.model_builder(source, compute);
  NIBBLE_CHECK(!source.calibrated_quantization,
               "{}: --quantization {} on an unquantized checkpoint calibrates and quantizes it "
               "first (quantize::prepare_quantize_and_serve), which this caller did not do",
               source.path.string(), source.quantization);
  LinearBuildOptions options;
  options.compute = compute;
  options.int8_activations_for_weight_only = source.int8_activations_for_weight_only;
  NIBBLE_CHECK(!source.quantize_lm_head || source.online_quantization || source.format == "gguf",
               "{}: --quantize-lm-head quantizes the output layer with an online method "
               "(--quantization / --torchao-config on an unquantized checkpoint) or runs a GGUF "
               "file's tied embedding as lm_head in its block type; this model has neither "
               "(quantization: {})",
               source.path.string(), source.quantization.empty() ? "none" : source.quantization);
  options.quantize_lm_head = source.quantize_lm_head;
  if (source.online_quantization) {
    auto method = quant::parse_online_method(source.quantization_flag, source.torchao_config);
    NIBBLE_CHECK(method.has_value(), "{}: online method {} is no longer known",
                 source.path.string(), source.quantization);
    options.online = [method = *method](std::span<const float> w, int64_t rows,
                                        int64_t cols) -> std::optional<quant::LinearScheme> {
      // torchao leaves a layer whose K its group size does not divide unquantized, with a log
      // line; so does nibble, for every method.
      if (auto problem = quant::online_shape_problem(method, rows, cols)) {
        spdlog::warn("{}: a [{}, {}] weight stays unquantized: {}", method.name, rows, cols,
                     *problem);
        return std::nullopt;
      }
      return quant::quantize_online(method, w, rows, cols);
    };
  }
  return create_llama_model(source.config, *source.checkpoint, options);
}

std::filesystem::path default_model_path() {
  std::filesystem::path home;
  if (const char* env = std::getenv("NIBBLE_HOME"); env != nullptr && *env != '\0') {
    home = env;
  } else if (const char* user_home = std::getenv("HOME"); user_home != nullptr) {
    home = std::filesystem::path(user_home) / ".cache" / "nibble";
  } else {
    fail("cannot locate the default model: neither NIBBLE_HOME nor HOME is set");
  }
  const auto path = home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  NIBBLE_CHECK(std::filesystem::exists(path),
               "the default model is missing at {}: run scripts/setup.sh or pass --model-path",
               path.string());
  return path;
}

ComputeType parse_compute_type(const std::string& name) {
  if (name == "float32" || name == "f32" || name == "fp32") return ComputeType::F32;
  if (name == "bfloat16" || name == "bf16") return ComputeType::BF16;
  fail("--dtype: unknown value '{}' (expected float32 or bfloat16)", name);
}

}  // namespace nibble
