// `nibble convert`: GGUF -> HF directory (dequantized), HF directory -> GGUF.
// Output is built in a temporary sibling and renamed into place at the end
// (core/atomic_output.h), so an interrupted conversion never leaves something
// that looks like a valid model.
#include <cstdio>

#include "command.h"
#include "convert_gguf.h"
#include "core/atomic_file.h"
#include "core/atomic_output.h"
#include "core/error.h"
#include "core/numeric.h"
#include "formats/hf/hf_config.h"
#include "formats/safetensors/safetensors_writer.h"
#include "model/loader.h"

namespace nibble::cli {
namespace {

struct ConvertOptions {
  std::string input;
  std::string out;
  std::string dtype = "bfloat16";
  bool force = false;
};

std::vector<uint8_t> encode_tensor(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  if (dtype == DType::F32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
    std::memcpy(&bytes[2 * i], &h, 2);
  }
  return bytes;
}

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "f32") return DType::F32;
  if (name == "bfloat16" || name == "bf16") return DType::BF16;
  if (name == "float16" || name == "f16") return DType::F16;
  fail("--dtype: unknown value '{}' (expected float32, bfloat16 or float16)", name);
}

std::string torch_dtype_name(DType t) {
  return t == DType::F32 ? "float32" : t == DType::BF16 ? "bfloat16" : "float16";
}

void write_hf_directory(const ModelSource& source, const std::filesystem::path& dir, DType dtype) {
  std::vector<SafetensorsTensorSpec> specs;
  for (const auto& t : source.checkpoint->tensors()) specs.push_back({t.name, dtype, t.shape});
  SafetensorsWriter writer(dir / "model.safetensors", specs);
  // One tensor at a time: peak memory stays at the largest tensor, not the
  // model.
  for (const auto& spec : writer.order()) {
    const auto values = source.checkpoint->load_f32(spec.name);
    writer.write(spec.name, encode_tensor(values, dtype));
  }
  writer.commit();

  ModelConfig config = source.config;
  config.torch_dtype = torch_dtype_name(dtype);
  write_file_atomic(dir / "config.json", hf_config_to_json(config).dump(2) + "\n");
  nlohmann::json gen = {{"_from_model_config", true}};
  if (config.bos_token_id) gen["bos_token_id"] = *config.bos_token_id;
  if (!source.stop_ids.empty()) gen["eos_token_id"] = source.stop_ids;
  write_file_atomic(dir / "generation_config.json", gen.dump(2) + "\n");

  if (source.tokenizer) {
    write_file_atomic(dir / "tokenizer.json", source.tokenizer->to_hf_json().dump() + "\n");
    nlohmann::json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                         {"model_max_length", config.max_position_embeddings},
                         {"clean_up_tokenization_spaces", false}};
    if (!source.bos_token.empty()) tc["bos_token"] = source.bos_token;
    if (!source.eos_token.empty()) tc["eos_token"] = source.eos_token;
    if (!source.chat_template.empty()) tc["chat_template"] = source.chat_template;
    write_file_atomic(dir / "tokenizer_config.json", tc.dump(2) + "\n");
  }
}

int run_convert(const ConvertOptions& o) {
  const std::filesystem::path out(o.out);
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && !o.force)
    fail("{}: already exists (pass --force to replace it)", out.string());
  const ModelSource source = open_model_source(o.input);
  const bool to_gguf = out.extension() == ".gguf";

  if (to_gguf) {
    write_gguf_from_source(source, out, o.dtype);
    std::printf("wrote %s\n", out.string().c_str());
    return 0;
  }
  const DType dtype = parse_dtype(o.dtype);
  AtomicOutputDirectory output(out, o.force);
  write_hf_directory(source, output.path(), dtype);
  output.commit();
  std::printf("wrote %s\n", out.string().c_str());
  return 0;
}

NIBBLE_COMMAND(convert, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<ConvertOptions>();
  app.description(
      "Convert between formats: GGUF -> HF directory (dequantized to --dtype), "
      "HF directory or GGUF -> GGUF (OUT ending in .gguf)");
  app.add_option("input", o->input, "GGUF file or HF model directory")->required();
  app.add_option("--out,-o", o->out, "output directory, or a .gguf file")->required();
  app.add_option("--dtype", o->dtype,
                 "HF output: float32, bfloat16, float16; GGUF output: F32, "
                 "F16, BF16, Q8_0, Q4_0, "
                 "Q4_1")
      ->capture_default_str();
  app.add_flag("--force", o->force, "replace an existing output");
  return [o] { return run_convert(*o); };
});

}  // namespace
}  // namespace nibble::cli
