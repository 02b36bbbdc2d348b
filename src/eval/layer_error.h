#pragma once
// Per-layer quantization error of a model against its reference, for `nibble validate`: for
// every linear layer of the transformer blocks, the relative Frobenius error
//   ||W_model - W_reference||_F / ||W_reference||_F
// of the weight the model computes with (a stored quantized weight dequantized through the
// scalar reference; a weight quantized online at load quantized here exactly as build_model
// does, fused projections included) against the reference checkpoint's weight. It is computed
// one fused projection at a time from the checkpoints, never from two built models, so peak
// memory grows by a few dense copies of the largest projection only (docs/eval.md).
#include <cstdint>
#include <string>
#include <vector>

namespace nibble {
struct ModelSource;
}

namespace nibble::eval {

struct LayerWeightError {
  std::string name;    // module path, e.g. "model.layers.3.self_attn.q_proj"
  int64_t block = 0;   // transformer block index
  std::string format;  // how the model holds it: "Q8_0", "fp8", "BF16", "dense" (left unquantized)
  int64_t rows = 0, cols = 0;
  double relative_error = 0.0;  // ||W_model - W_ref||_F / ||W_ref||_F (0 when W_ref is 0)
};

// Throws nibble::Error naming the tensor when either checkpoint lacks it or the shapes differ.
std::vector<LayerWeightError> layer_weight_errors(const ModelSource& model,
                                                  const ModelSource& reference);

}  // namespace nibble::eval
