#pragma once
#include <filesystem>
#include <string>

#include "model/loader.h"

namespace nibble::cli {

// Writes `source` as a GGUF file with weights of `type_name` (F32, F16, BF16,
// Q8_0, Q4_0, Q4_1, Q4_K; Q4_K matrices whose rows are not whole 256-element
// super-blocks are written Q5_0); norms and other 1-D tensors stay F32 as
// llama.cpp keeps them.
void write_gguf_from_source(const ModelSource& source, const std::filesystem::path& out,
                            const std::string& type_name);

}  // namespace nibble::cli
