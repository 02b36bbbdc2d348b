#pragma once
// What every HF-directory exporter shares: the dense tensors that stay unquantized, the bytes of
// scales in their on-disk dtype, and the atomic output directory (written under a temporary
// name and renamed at the end) with config.json, tokenizer and chat-template files carried over.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "formats/safetensors/safetensors_writer.h"
#include "quant/scheme.h"
#include "quantize/pipeline.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

struct ExportTensor {
  SafetensorsTensorSpec spec;
  std::function<std::vector<uint8_t>()> bytes;  // produced when the writer reaches it
};

// Every tensor of the source except the weights of quantized modules, in its stored dtype
// (bf16 for types that are not plain floats), with the pipeline's overrides applied.
void add_dense_tensors(const ModelSource& source, const QuantizedModel& model,
                       std::vector<ExportTensor>& out);

// Adds a tensor whose bytes are already computed.
void add_tensor(std::vector<ExportTensor>& out, std::string name, DType dtype,
                std::vector<int64_t> shape, std::vector<uint8_t> bytes);

std::vector<uint8_t> encode_floats(const std::vector<float>& values, DType dtype);
template <typename T>
std::vector<uint8_t> raw_bytes(const std::vector<T>& values) {
  const auto* p = reinterpret_cast<const uint8_t*>(values.data());
  return std::vector<uint8_t>(p, p + values.size() * sizeof(T));
}
DType scale_dtype_to_dtype(quant::ScaleDType t);

// Sets the `bits`-wide field at stream bit `bit` of a little-endian stream of 32-bit words
// (words[i * stride]): every packed integer layout here (GPTQ qweight/qzeros incl. 3-bit,
// compressed-tensors weight_packed/weight_zero_point) is such a stream.
void set_word_field(std::vector<uint32_t>& words, int64_t first_word, int64_t stride, int64_t bit,
                    int bits, uint32_t value);

// The unsigned code of element (n, k) (signed codes offset by 2^(b−1)) and the unsigned zero
// point of its scale block (2^(b−1) when symmetric).
uint32_t unsigned_code(const quant::QuantizedTensor& t, int64_t n, int64_t k);
uint32_t unsigned_zero(const quant::QuantizedTensor& t, int64_t scale_index);

// Module paths that the source has as linear layers but the pipeline left dense (ignored).
std::vector<std::string> unquantized_linears(const ModelSource& source,
                                             const QuantizedModel& model);

// Writes `out` atomically: model.safetensors, config.json (the source's, with
// "quantization_config" set), each side file (quantize_config.json, ...), and the tokenizer,
// generation and chat-template files of the source. Refuses an existing `out` unless `force`.
void write_export_directory(const ModelSource& source, const std::filesystem::path& out,
                            std::vector<ExportTensor> tensors,
                            const nlohmann::json& quantization_config,
                            const std::map<std::string, nlohmann::json>& side_files, bool force);

}  // namespace nibble::quantize
