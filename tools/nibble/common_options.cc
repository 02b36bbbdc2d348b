#include "common_options.h"

#include "core/error.h"
#include "core/thread_pool.h"

namespace nibble::cli {

void ModelOptions::add(CLI::App& app) {
  app.add_option("--model-path,-m", model_path,
                 "HF model directory or GGUF file (default: the embedded "
                 "SmolLM2-135M-Instruct)");
  app.add_option("--dtype", dtype, "auto, float32 or bfloat16 (weights and compute)")
      ->capture_default_str();
  app.add_option("--threads,-t", threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--quantization", quantization,
                 "the checkpoint's method (default: read from its config), or an online method "
                 "for an unquantized one: fp8, w8a8_fp8, w8a8_int8, bitsandbytes, int4, q4_0, "
                 "q4_k, q8_0; modelopt_fp8 / modelopt_fp4 calibrate and quantize it first "
                 "(ModelOpt quantize-and-serve)");
  app.add_option("--torchao-config", torchao_config,
                 "online quantization as torchao: int8dq, int8wo, fp8wo, fp8dq-per_tensor, "
                 "fp8dq-per_row, int4wo-32, int4wo-64, int4wo-128, int4wo-256");
  app.add_option("--kv-cache-dtype", kv_cache_dtype, "auto (float32), bf16, fp8_e4m3 or fp8_e5m2")
      ->capture_default_str();
  app.add_option("--quantization-param-path", quantization_param_path,
                 "JSON with per-layer fp8 KV-cache scales (default: the checkpoint's k/v scales)");
  app.add_option("--modelopt-export-path", modelopt_export_path,
                 "with --quantization modelopt_fp8|modelopt_fp4: also write the ModelOpt "
                 "checkpoint to this directory");
  app.add_option("--modelopt-checkpoint-save-path", modelopt_checkpoint_save_path,
                 "with --quantization modelopt_*: save the calibration statistics (a directory)");
  app.add_option("--modelopt-checkpoint-restore-path", modelopt_checkpoint_restore_path,
                 "with --quantization modelopt_*: reuse saved calibration statistics (no "
                 "calibration forward)");
  app.add_option("--modelopt-quant", modelopt_quant,
                 "SGLang's other spelling: fp8 (= --quantization modelopt_fp8) or nvfp4 "
                 "(= modelopt_fp4)");
  app.add_flag("--quantize-and-serve", quantize_and_serve,
               "accepted as SGLang's switch (needs a ModelOpt --quantization; nibble always "
               "serves what it quantized)");
  app.add_flag("--cpu-int8-activations", cpu_int8_activations,
               "run weight-only int4/int8 layers (GPTQ, AWQ, int4, int8wo, GGUF Q4_0/Q8_0...) "
               "on the integer kernels (W4A8/W8A8) with int8 activations scaled per weight "
               "group (GGUF: blocks of 32), as llama.cpp does: faster decode, and a small "
               "change of the numerics");
  app.add_flag(
      "--quantize-lm-head", quantize_lm_head,
      "quantize the output layer too (SGLang leaves it unquantized): with an online "
      "--quantization / --torchao-config, lm_head (or a quantized copy of a tied "
      "embedding) takes the same method; a GGUF file's tied token_embd serves as lm_head in its "
      "block type. "
      "Faster decode (lm_head is read every step), more quantization error");
}

std::string ModelOptions::effective_quantization() const {
  return quantize::modelopt_quantization(quantization, modelopt_quant, quantize_and_serve);
}

quantize::ModelOptServeOptions ModelOptions::modelopt() const {
  quantize::ModelOptServeOptions o;
  o.export_path = modelopt_export_path;
  o.checkpoint_save_path = modelopt_checkpoint_save_path;
  o.checkpoint_restore_path = modelopt_checkpoint_restore_path;
  return o;
}

KvCacheSpec ModelOptions::kv_cache(const ModelSource& source) const {
  return resolve_kv_cache(kv_cache_dtype, quantization_param_path, source.raw_checkpoint.get(),
                          source.config.num_hidden_layers);
}

ModelSource ModelOptions::open() const {
  ModelSource source = open_model_source(resolved_path(), effective_quantization(), torchao_config);
  source.int8_activations_for_weight_only = cpu_int8_activations;
  source.quantize_lm_head = quantize_lm_head;
  quantize::prepare_quantize_and_serve(source, modelopt());
  return source;
}

std::filesystem::path ModelOptions::resolved_path() const {
  return model_path.empty() ? default_model_path() : std::filesystem::path(model_path);
}

ComputeType ModelOptions::compute_type() const {
  if (dtype == "auto") return ComputeType::F32;
  return parse_compute_type(dtype);
}

void ModelOptions::apply_threads() const {
  if (threads > 0) ThreadPool::set_global_threads(threads);
}

void SamplingOptions::add(CLI::App& app) {
  app.add_option("--temperature", temperature, "0 is greedy (default: the model's, else 1.0)");
  app.add_option("--top-p", top_p);
  app.add_option("--top-k", top_k, "-1 disables");
  app.add_option("--min-p", min_p);
  app.add_option("--repetition-penalty", repetition_penalty);
  app.add_option("--frequency-penalty", frequency_penalty);
  app.add_option("--presence-penalty", presence_penalty);
  app.add_option("--max-new-tokens,-n", max_new_tokens)->capture_default_str();
  app.add_option("--stop", stop, "stop strings (repeatable)");
  app.add_option("--stop-token-ids", stop_token_ids);
  app.add_option("--seed", seed, "sampling seed (reproducible output)");
  app.add_flag("--ignore-eos", ignore_eos);
}

SamplingParams SamplingOptions::resolve(const GenerationDefaults& defaults) const {
  SamplingParams p;
  p.temperature = temperature.value_or(defaults.temperature.value_or(p.temperature));
  p.top_p = top_p.value_or(defaults.top_p.value_or(p.top_p));
  p.top_k = top_k.value_or(defaults.top_k.value_or(p.top_k));
  p.min_p = min_p.value_or(defaults.min_p.value_or(p.min_p));
  p.repetition_penalty =
      repetition_penalty.value_or(defaults.repetition_penalty.value_or(p.repetition_penalty));
  p.frequency_penalty = frequency_penalty;
  p.presence_penalty = presence_penalty;
  p.max_new_tokens = max_new_tokens;
  p.stop = stop;
  p.stop_token_ids = stop_token_ids;
  p.seed = seed;
  p.ignore_eos = ignore_eos;
  p.validate();
  return p;
}

const Tokenizer& require_tokenizer(const ModelSource& source) {
  NIBBLE_CHECK(source.tokenizer != nullptr,
               "{}: the model has no tokenizer (tokenizer.json); this command needs one",
               source.path.string());
  return *source.tokenizer;
}

}  // namespace nibble::cli
