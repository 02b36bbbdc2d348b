#pragma once
#include <filesystem>
#include <map>
#include <string>

#include "model/loader.h"
#include "quant/scheme.h"

namespace nibble::cli {

// Writes `source` as a GGUF file with weights of `type_name` (F32, F16, BF16,
// Q8_0, Q4_0, Q4_1, Q4_K; Q4_K matrices whose rows are not whole 256-element
// super-blocks are written Q5_0); norms and other 1-D tensors stay F32 as
// llama.cpp keeps them.
// `quantized`: linears already quantized to GGUF blocks (nibble quantize), by module path
// ("model.layers.0.self_attn.q_proj"); they are written as they are instead of quantized again.
void write_gguf_from_source(const ModelSource& source, const std::filesystem::path& out,
                            const std::string& type_name,
                            const std::map<std::string, quant::LinearScheme>* quantized = nullptr);

}  // namespace nibble::cli
