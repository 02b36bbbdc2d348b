#pragma once
// Opens a model given as an HF directory (config.json, *.safetensors, tokenizer.json) or a
// GGUF file, and builds the runnable model from it.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/model_config.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace nibble {

namespace gguf {
class GgufFile;
}

// Defaults from generation_config.json (or GGUF), applied under the user's explicit flags.
struct GenerationDefaults {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int32_t> top_k;
};

struct ModelSource {
  std::filesystem::path path;
  std::string format;  // "hf" or "gguf"
  ModelConfig config;
  GenerationDefaults generation;
  std::shared_ptr<Checkpoint> checkpoint;      // tensors under HF names and layouts
  std::shared_ptr<Checkpoint> raw_checkpoint;  // as stored (GGUF names for a GGUF file)
  std::shared_ptr<gguf::GgufFile> gguf;        // set for GGUF files
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;  // empty when the model has none
  std::string bos_token, eos_token;
  // Tokens that end generation: the eos id(s) plus end-of-turn tokens of chat models.
  std::vector<int32_t> stop_ids;
  // How the linear layers are quantized: the checkpoint's method ("gptq", "gguf", ...), an
  // online method given by --quantization / --torchao-config ("fp8", "int4wo-128", ...), or
  // empty for a dense model.
  std::string quantization;
  bool online_quantization = false;
  // --quantization modelopt_fp8 / modelopt_fp4 on an unquantized checkpoint: the weights are
  // quantized with calibration before the model is built (quantize/quantize_and_serve.h sets
  // model_builder; build_model refuses until it has).
  bool calibrated_quantization = false;
  std::string quantization_flag, torchao_config;  // as given
  // --cpu-int8-activations: weight-only int4/int8 layers run as W4A8 / W8A8 on the CPU.
  bool int8_activations_for_weight_only = false;
  // --quantize-lm-head (LinearBuildOptions::quantize_lm_head): needs an online method or a GGUF
  // file; build_model refuses it otherwise.
  bool quantize_lm_head = false;
  // Set when the linears were already quantized in this process: build_model calls it instead
  // of reading the checkpoint's linears (the dependency points up, from quantize/, by injection).
  std::function<std::unique_ptr<Model>(const ModelSource&, ComputeType)> model_builder;
};

// Reads configs, tokenizer and the tensor table; weights stay memory-mapped. `quantization`
// is SGLang's --quantization (empty: what the checkpoint says; see quant/resolve.h), and
// `torchao_config` its --torchao-config; on an unquantized checkpoint either asks for online
// quantization (quant/online.h), which build_model applies layer by layer.
ModelSource open_model_source(const std::filesystem::path& path,
                              const std::string& quantization = "",
                              const std::string& torchao_config = "");

// Online quantization streams: each dense weight is read, quantized and dropped before the next,
// so peak memory stays near the quantized model plus one fused bf16/f32 weight.
std::unique_ptr<Model> build_model(const ModelSource& source, ComputeType compute);

// $NIBBLE_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf (NIBBLE_HOME defaults to ~/.cache/nibble).
std::filesystem::path default_model_path();

ComputeType parse_compute_type(const std::string& name);  // "float32"/"f32", "bfloat16"/"bf16"

}  // namespace nibble
