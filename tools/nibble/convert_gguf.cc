#include "convert_gguf.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/atomic_output.h"
#include "core/error.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_kquant.h"
#include "formats/gguf/gguf_model_config.h"
#include "formats/gguf/gguf_writer.h"
#include "model/gguf_names.h"

namespace nibble::cli {
namespace {

gguf::GgmlType parse_ggml_type(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), ::toupper);
  if (name == "FLOAT32") name = "F32";
  if (name == "FLOAT16") name = "F16";
  if (name == "BFLOAT16") name = "BF16";
  for (auto t :
       {gguf::GgmlType::F32, gguf::GgmlType::F16, gguf::GgmlType::BF16, gguf::GgmlType::Q8_0,
        gguf::GgmlType::Q4_0, gguf::GgmlType::Q4_1, gguf::GgmlType::Q4_K}) {
    if (gguf::type_name(t) == name) return t;
  }
  fail(
      "--dtype: '{}' is not a GGUF output type nibble writes (F32, F16, BF16, "
      "Q8_0, Q4_0, Q4_1, Q4_K)",
      name);
}

std::vector<uint8_t> encode(const std::vector<float>& values, gguf::GgmlType type) {
  const auto n = static_cast<int64_t>(values.size());
  std::vector<uint8_t> out(gguf::row_bytes(type, n));
  switch (type) {
    case gguf::GgmlType::F32: std::memcpy(out.data(), values.data(), out.size()); break;
    case gguf::GgmlType::F16:
    case gguf::GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h =
            type == gguf::GgmlType::F16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
        std::memcpy(&out[2 * i], &h, 2);
      }
      break;
    default: gguf::quantize_row(type, values.data(), out.data(), n); break;
  }
  return out;
}

// Byte-level BPE vocabularies become tokenizer.ggml.model "gpt2", as llama.cpp
// writes them.
void add_tokenizer_metadata(const ModelSource& source, gguf::GgufWriter& writer) {
  NIBBLE_CHECK(source.tokenizer != nullptr, "{}: no tokenizer to convert", source.path.string());
  const nlohmann::json tj = source.tokenizer->to_hf_json();
  const auto& model = tj.at("model");
  NIBBLE_CHECK(model.value("type", "") == "BPE" && !model.value("byte_fallback", false),
               "{}: only byte-level BPE tokenizers convert to GGUF for now", source.path.string());
  std::string pre;
  if (source.gguf) {
    pre = source.gguf->get_string("tokenizer.ggml.pre").value_or("");
  } else if (auto name = gguf_pre_tokenizer_name(tj)) {
    pre = *name;
  }
  NIBBLE_CHECK(!pre.empty(),
               "{}: the tokenizer's pre-tokenizer split matches no llama.cpp pre-tokenizer "
               "(tokenizer.ggml.pre) that nibble knows; llama.cpp would tokenize differently",
               source.path.string());
  const int64_t vocab = source.tokenizer->vocab_size();
  std::vector<std::string> tokens(vocab);
  std::vector<int32_t> types(vocab, 1);  // 1 normal, 3 control, 4 user-defined
  for (int64_t id = 0; id < vocab; ++id) {
    tokens[id] = source.tokenizer->id_to_token(static_cast<int32_t>(id));
    if (source.tokenizer->is_special(static_cast<int32_t>(id))) types[id] = 3;
  }
  std::vector<std::string> merges;
  for (const auto& m : model.at("merges")) {
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string("tokenizer.ggml.pre", pre);
  writer.add_string_array("tokenizer.ggml.tokens", tokens);
  writer.add_int32_array("tokenizer.ggml.token_type", types);
  writer.add_string_array("tokenizer.ggml.merges", merges);
  if (!source.chat_template.empty())
    writer.add_string("tokenizer.chat_template", source.chat_template);
}

}  // namespace

void write_gguf_from_source(const ModelSource& source, const std::filesystem::path& out,
                            const std::string& type_name,
                            const std::map<std::string, quant::LinearScheme>* quantized) {
  const gguf::GgmlType weight_type = parse_ggml_type(type_name);
  // The file itself is written under a partial name and renamed (AtomicFileWriter); a
  // leftover of an interrupted run goes first.
  remove_stale_partials(out);
  gguf::GgufWriter writer(out);
  writer.add_string("general.name", source.path.stem().string());
  for (auto& [key, value] : gguf::gguf_metadata_from_model_config(source.config))
    writer.add(key, value);
  add_tokenizer_metadata(source, writer);
  const std::string arch = gguf::gguf_architecture_for(source.config.model_type);
  for (const auto& t : source.checkpoint->tensors()) {
    auto name = hf_to_gguf_name(t.name);
    NIBBLE_CHECK(name.has_value(), "{}: tensor '{}' has no GGUF name", source.path.string(),
                 t.name);
    // Quantize matrices whose rows fill whole blocks; 1-D tensors (norms,
    // biases) stay F32.
    gguf::GgmlType type = gguf::GgmlType::F32;
    if (t.shape.size() == 2) {
      // Q4_K rows that are not whole super-blocks fall back to Q5_0 (gguf_kquant.h).
      const gguf::GgmlType row_type = gguf::kquant_row_type(weight_type, t.shape[1]);
      const auto traits = gguf::type_traits(row_type);
      if (traits && t.shape[1] % traits->block_elems == 0) type = row_type;
    }
    const bool permute =
        arch == "llama" && (t.name.ends_with("q_proj.weight") || t.name.ends_with("k_proj.weight"));
    const int64_t heads = t.name.ends_with("q_proj.weight") ? source.config.num_attention_heads
                                                            : source.config.num_key_value_heads;
    const Checkpoint* checkpoint = source.checkpoint.get();
    const std::string hf_name = t.name;
    const auto shape = t.shape;
    const quant::QuantizedTensor* blocks = nullptr;
    if (quantized && hf_name.ends_with(".weight")) {
      const auto it = quantized->find(hf_name.substr(0, hf_name.size() - 7));
      if (it != quantized->end()) blocks = &it->second.weight;
    }
    if (blocks) {
      NIBBLE_CHECK(blocks->elem == quant::ElemType::GgufBlock && blocks->gguf_type == int(type) &&
                       blocks->rows == shape[0] && blocks->cols == shape[1],
                   "{}: the quantized blocks are not {} [{}, {}]", hf_name, gguf::type_name(type),
                   shape[0], shape[1]);
      writer.add_tensor_lazy(*name, type, shape, [=]() {
        // Quantization is per row, so llama.cpp's q/k row order permutes whole block rows.
        if (!permute) return blocks->codes;
        const auto row_bytes = static_cast<size_t>(blocks->row_bytes);
        std::vector<uint8_t> permuted(blocks->codes.size());
        for (int64_t r = 0; r < shape[0]; ++r)
          std::memcpy(&permuted[size_t(llama_gguf_row_for_hf_row(r, shape[0], heads)) * row_bytes],
                      &blocks->codes[size_t(r) * row_bytes], row_bytes);
        return permuted;
      });
      continue;
    }
    writer.add_tensor_lazy(*name, type, shape, [=]() {
      std::vector<float> values = checkpoint->load_f32(hf_name);
      if (permute) {
        // llama.cpp rotates adjacent pairs: store q/k rows in its interleaved
        // order.
        const int64_t rows = shape[0];
        const int64_t cols = shape[1];
        std::vector<float> permuted(values.size());
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t dst = llama_gguf_row_for_hf_row(r, rows, heads);
          std::memcpy(&permuted[dst * cols], &values[r * cols], cols * sizeof(float));
        }
        values.swap(permuted);
      }
      return encode(values, type);
    });
  }
  writer.write();
}

}  // namespace nibble::cli
