#pragma once
// GGUF metadata <-> nibble::ModelConfig for the llama (incl. Mistral stored as llama),
// qwen2 and qwen3 architectures.
#include <string>
#include <utility>
#include <vector>

#include "formats/gguf/gguf_file.h"
#include "formats/model_config.h"

namespace nibble::gguf {

// Reads {arch}.* hyperparameters, the vocabulary size and the special token ids. Throws
// nibble::Error naming the file and key for an unsupported architecture, a missing
// required key or a key of the wrong type.
ModelConfig model_config_from_gguf(const GgufFile& file);

// The metadata keys llama.cpp expects for `config` (general.architecture, {arch}.*,
// tokenizer.ggml.*_token_id), in the order convert_hf_to_gguf writes them. Tokenizer
// vocabularies and general.name/file_type are the converter's to add.
std::vector<std::pair<std::string, MetaValue>> gguf_metadata_from_model_config(
    const ModelConfig& config);

// GGUF architecture name for a transformers model_type ("mistral" -> "llama").
std::string gguf_architecture_for(const std::string& model_type);

}  // namespace nibble::gguf
