#pragma once
// Flags shared by the commands that load a model and generate, spelled as
// sglang.launch_server and SGLang's sampling parameters spell them.
#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

#include "model/loader.h"
#include "quantize/quantize_and_serve.h"
#include "runtime/kv_scales.h"
#include "runtime/sampling_params.h"

namespace nibble::cli {

struct ModelOptions {
  std::string model_path;
  std::string dtype = "auto";  // auto picks bfloat16 when the CPU has native bf16 dot products
  int threads = 0;
  std::string quantization;    // SGLang's --quantization
  std::string torchao_config;  // SGLang's --torchao-config
  std::string kv_cache_dtype = "auto";
  std::string quantization_param_path;  // fp8 KV-cache scales (JSON)
  // SGLang's ModelOpt quantize-and-serve flags (quantize/quantize_and_serve.h).
  std::string modelopt_export_path, modelopt_checkpoint_save_path, modelopt_checkpoint_restore_path;
  std::string modelopt_quant;  // SGLang's --modelopt-quant fp8 | nvfp4
  bool quantize_and_serve = false;
  bool cpu_int8_activations = false;
  bool quantize_lm_head = false;
  // --quantization with --modelopt-quant / --quantize-and-serve folded in.
  std::string effective_quantization() const;
  void add(CLI::App& app);
  KvCacheSpec kv_cache(const ModelSource& source) const;
  // open_model_source with the path and quantization flags; modelopt_fp8 / modelopt_fp4 on an
  // unquantized checkpoint calibrate and quantize here.
  ModelSource open() const;
  quantize::ModelOptServeOptions modelopt() const;
  std::filesystem::path resolved_path() const;
  ComputeType compute_type() const;
  void apply_threads() const;
};

struct SamplingOptions {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int32_t> top_k;
  float frequency_penalty = 0.0f, presence_penalty = 0.0f;
  int64_t max_new_tokens = 128;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  void add(CLI::App& app);
  // Explicit flags win over the model's generation defaults, which win over
  // SGLang's defaults.
  SamplingParams resolve(const GenerationDefaults& defaults) const;
};

// Commands that work on text need the model's tokenizer.
const Tokenizer& require_tokenizer(const ModelSource& source);

}  // namespace nibble::cli
