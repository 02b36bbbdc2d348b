#pragma once
// Builds a model's linear layers from a checkpoint, whatever form their weights take there:
// dense tensors (f32/bf16 compute, or quantized at load by an online method), pre-quantized
// layers of a quantized HF checkpoint, or GGUF block types, which run quantized rather than
// being dequantized at load.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/linear_weight.h"
#include "formats/checkpoint.h"
#include "model/model.h"
#include "quant/scheme.h"

namespace nibble {

// Quantizes one dense (possibly fused) weight W[rows, cols] at load time; nullopt leaves it dense.
using OnlineQuantizer = std::function<std::optional<quant::LinearScheme>(
    std::span<const float> w, int64_t rows, int64_t cols)>;

struct LinearBuildOptions {
  ComputeType compute = ComputeType::F32;
  // Applied to every dense decoder linear (never to embeddings or lm_head); empty: none.
  OnlineQuantizer online;
  // Weight-only int4/int8 layers take int8 activations with one scale per weight group and the
  // integer kernels (W4A8 / W8A8), as llama.cpp computes its quantized types; off: x stays f32.
  bool int8_activations_for_weight_only = false;
  // The output layer too (nibble's own, off as in SGLang): the online method quantizes lm_head,
  // a tied model gets a quantized copy of its embedding as lm_head (the embedding itself stays
  // for lookups), and a tied GGUF token_embd also serves as lm_head in its block type (an untied
  // GGUF output runs in its type anyway). Decode reads lm_head every step: in bf16 it is half
  // of a 1B model's bytes at 4 bits.
  bool quantize_lm_head = false;
};

// The linear layer whose weight is the row-stack of `names` (each [rows[i], cols]): q/k/v and
// gate/up are fused this way. Parts that cannot share one quantized layout run side by side.
// Throws nibble::Error naming checkpoint.source() and the tensor when one is missing or has the
// wrong shape.
std::unique_ptr<cpu::LinearWeight> build_linear(const Checkpoint& checkpoint,
                                                const std::vector<std::string>& names,
                                                const std::vector<int64_t>& rows, int64_t cols,
                                                const LinearBuildOptions& options);

// f32 values of a tensor of known shape, with the same checks.
std::vector<float> load_checked(const Checkpoint& checkpoint, const std::string& name,
                                const std::vector<int64_t>& shape);

}  // namespace nibble
