#pragma once
// Presents a GGUF checkpoint under Hugging Face tensor names and layouts, so one model
// implementation serves both. llama.cpp's converter reorders the rows of attn_q/attn_k for
// the "llama" architecture (its RoPE rotates adjacent pairs, HF's rotates halves); that
// reordering is undone here, on the raw (possibly quantized) rows, which are independent.
#include <memory>
#include <optional>
#include <string>

#include "formats/checkpoint.h"
#include "formats/model_config.h"

namespace nibble {

// GGUF name ("blk.3.attn_q.weight") -> HF name ("model.layers.3.self_attn.q_proj.weight").
std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name);
// The inverse, for HF -> GGUF conversion.
std::optional<std::string> hf_to_gguf_name(const std::string& hf_name);

// `gguf_architecture` is general.architecture; rows are un-permuted only for "llama".
std::shared_ptr<Checkpoint> gguf_as_hf_checkpoint(std::shared_ptr<const Checkpoint> gguf,
                                                  const ModelConfig& config,
                                                  const std::string& gguf_architecture);

// Row permutation llama.cpp applies to q/k weights: GGUF row for HF row `hf_row`.
int64_t llama_gguf_row_for_hf_row(int64_t hf_row, int64_t rows, int64_t n_heads);

}  // namespace nibble
