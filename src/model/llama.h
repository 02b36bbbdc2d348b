#pragma once
// The Llama family (llama, mistral, qwen2, qwen3) on the CPU backend: see create_llama_model in
// model.h. Pre-norm decoder blocks: RMSNorm, fused q/k/v projection (+bias for qwen2), per-head
// q/k RMSNorm (qwen3), RoPE, GQA attention over the paged KV cache, o_proj, residual, RMSNorm,
// fused gate/up projection, SwiGLU, down projection, residual; final RMSNorm and lm_head.
#include "model/model.h"

namespace nibble {

struct LinearBuildOptions;

// With the linear layers built per `options` (compute dtype, online quantization).
std::unique_ptr<Model> create_llama_model(const ModelConfig& config, const Checkpoint& checkpoint,
                                          const LinearBuildOptions& options);

}  // namespace nibble
