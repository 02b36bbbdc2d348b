#include "quantize/export_common.h"

#include <fmt/format.h>

#include <cstring>
#include <set>

#include "core/atomic_file.h"
#include "core/atomic_output.h"
#include "core/error.h"
#include "core/numeric.h"
#include "formats/hf/hf_config.h"
#include "model/loader.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"
#include "quantize/decoder_layer.h"

namespace nibble::quantize {
namespace {

// Files of an HF model directory that travel with the weights unchanged.
constexpr const char* kCarriedFiles[] = {"tokenizer.json",
                                         "tokenizer_config.json",
                                         "special_tokens_map.json",
                                         "generation_config.json",
                                         "chat_template.jinja",
                                         "chat_template.json",
                                         "vocab.json",
                                         "merges.txt",
                                         "tokenizer.model",
                                         "added_tokens.json",
                                         "preprocessor_config.json"};

std::string module_of_weight(const std::string& name) {
  constexpr std::string_view suffix = ".weight";
  if (name.size() > suffix.size() && name.ends_with(suffix))
    return name.substr(0, name.size() - suffix.size());
  return {};
}

void write_tokenizer_files(const ModelSource& source, const std::filesystem::path& dir) {
  std::error_code ec;
  const bool hf_dir = source.format == "hf" && std::filesystem::is_directory(source.path, ec);
  if (hf_dir) {
    for (const char* name : kCarriedFiles) {
      const auto from = source.path / name;
      if (std::filesystem::exists(from, ec))
        std::filesystem::copy_file(from, dir / name,
                                   std::filesystem::copy_options::overwrite_existing);
    }
    return;
  }
  // A GGUF source: the tokenizer and chat template as transformers reads them.
  if (!source.tokenizer) return;
  write_file_atomic(dir / "tokenizer.json", source.tokenizer->to_hf_json().dump() + "\n");
  nlohmann::json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                       {"model_max_length", source.config.max_position_embeddings},
                       {"clean_up_tokenization_spaces", false}};
  if (!source.bos_token.empty()) tc["bos_token"] = source.bos_token;
  if (!source.eos_token.empty()) tc["eos_token"] = source.eos_token;
  if (!source.chat_template.empty()) tc["chat_template"] = source.chat_template;
  write_file_atomic(dir / "tokenizer_config.json", tc.dump(2) + "\n");
}

}  // namespace

void add_tensor(std::vector<ExportTensor>& out, std::string name, DType dtype,
                std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  auto shared = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  out.push_back({{std::move(name), dtype, std::move(shape)}, [shared] {
                   std::vector<uint8_t> b;
                   b.swap(*shared);
                   return b;
                 }});
}

std::vector<uint8_t> encode_floats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  switch (dtype) {
    case DType::F32:
      if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
      break;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
        std::memcpy(&bytes[2 * i], &h, 2);
      }
      break;
    default: fail("export: cannot encode floats as {}", dtype_name(dtype));
  }
  return bytes;
}

DType scale_dtype_to_dtype(quant::ScaleDType t) {
  switch (t) {
    case quant::ScaleDType::F16: return DType::F16;
    case quant::ScaleDType::BF16: return DType::BF16;
    case quant::ScaleDType::F32: return DType::F32;
    default:
      fail("export: scales of type {} have no safetensors float type here",
           quant::scale_dtype_name(t));
  }
}

void set_word_field(std::vector<uint32_t>& words, int64_t first_word, int64_t stride, int64_t bit,
                    int bits, uint32_t value) {
  const int64_t w = bit >> 5;
  const int offset = int(bit & 31);
  const uint64_t field = uint64_t(value & ((1u << bits) - 1)) << offset;
  words[size_t(first_word + w * stride)] |= uint32_t(field);
  if (offset + bits > 32) words[size_t(first_word + (w + 1) * stride)] |= uint32_t(field >> 32);
}

uint32_t unsigned_code(const quant::QuantizedTensor& t, int64_t n, int64_t k) {
  const uint32_t code = quant::get_code(t, n, k);
  const auto& info = quant::elem_info(t.elem);
  if (info.signed_int)
    return uint32_t(quant::sign_extend(code, info.bits) + (1 << (info.bits - 1)));
  return code;
}

uint32_t unsigned_zero(const quant::QuantizedTensor& t, int64_t scale_index) {
  if (t.zero_kind == quant::ZeroKind::Integer) return uint32_t(t.int_zeros[size_t(scale_index)]);
  return 1u << (quant::elem_bits(t.elem) - 1);
}

void add_dense_tensors(const ModelSource& source, const QuantizedModel& model,
                       std::vector<ExportTensor>& out) {
  const Checkpoint* ckpt = source.checkpoint.get();
  for (const CheckpointTensor& t : ckpt->tensors()) {
    if (model.linears.count(module_of_weight(t.name))) continue;
    const DType dtype = t.type == "F32" ? DType::F32 : t.type == "F16" ? DType::F16 : DType::BF16;
    const std::string name = t.name;
    const auto it = model.overrides.find(name);
    const std::vector<float>* override_values = it == model.overrides.end() ? nullptr : &it->second;
    out.push_back({{name, dtype, t.shape}, [ckpt, name, dtype, override_values, &t] {
                     if (override_values) return encode_floats(*override_values, dtype);
                     if (dtype_name(dtype) == t.type && t.data)
                       return std::vector<uint8_t>(t.data, t.data + t.nbytes);
                     return encode_floats(ckpt->load_f32(name), dtype);
                   }});
  }
}

std::vector<std::string> unquantized_linears(const ModelSource& source,
                                             const QuantizedModel& model) {
  std::vector<std::string> out;
  for (int64_t layer = 0; layer < source.config.num_hidden_layers; ++layer)
    for (LinearName n : kAllLinears) {
      const std::string m = linear_module(layer, linear_suffix(n));
      if (!model.linears.count(m)) out.push_back(m);
    }
  return out;
}

void write_export_directory(const ModelSource& source, const std::filesystem::path& out,
                            std::vector<ExportTensor> tensors,
                            const nlohmann::json& quantization_config,
                            const std::map<std::string, nlohmann::json>& side_files, bool force) {
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && !force)
    fail("--out {}: already exists (pass --force to replace it)", out.string());
  AtomicOutputDirectory output(out, force);
  const std::filesystem::path& temp = output.path();
  {
    std::vector<SafetensorsTensorSpec> specs;
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < tensors.size(); ++i) {
      specs.push_back(tensors[i].spec);
      NIBBLE_CHECK(index.emplace(tensors[i].spec.name, i).second,
                   "export: tensor '{}' written twice", tensors[i].spec.name);
    }
    SafetensorsWriter writer(temp / "model.safetensors", specs);
    for (const auto& spec : writer.order()) {
      ExportTensor& t = tensors[index.at(spec.name)];
      const std::vector<uint8_t> bytes = t.bytes();
      NIBBLE_CHECK(bytes.size() == spec.nbytes(), "export: tensor '{}' produced {} bytes, not {}",
                   spec.name, bytes.size(), spec.nbytes());
      writer.write(spec.name, bytes);
    }
    writer.commit();

    nlohmann::json config;
    const auto source_config = source.path / "config.json";
    if (source.format == "hf" && std::filesystem::exists(source_config, ec)) {
      config = read_json_file(source_config);
    } else {
      config = hf_config_to_json(source.config);
    }
    config.erase("compression_config");
    config["quantization_config"] = quantization_config;
    write_file_atomic(temp / "config.json", config.dump(2) + "\n");
    for (const auto& [name, value] : side_files)
      write_file_atomic(temp / name, value.dump(2) + "\n");
    write_tokenizer_files(source, temp);
  }
  output.commit();
}

}  // namespace nibble::quantize
