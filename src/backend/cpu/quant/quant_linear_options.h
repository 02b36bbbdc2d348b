#pragma once
// Choices of make_quantized_linear beyond the scheme itself.
#include <memory>

#include "backend/cpu/linear_weight.h"

namespace nibble::cpu {

struct QuantLinearOptions {
  // Weight-only integer schemes (ActQuantKind::None) run on the int8 dot-product kernels with
  // activations quantized per token to int8 (llama.cpp's q4_0 x q8_0 idea): faster, but it
  // adds the activation rounding, so the numerics are no longer the scheme's. Off by default.
  bool int8_activations_for_weight_only = false;
};

std::unique_ptr<LinearWeight> make_quantized_linear(const quant::QuantizedTensor& weight,
                                                    const quant::ActQuant& act, WeightType fallback,
                                                    const QuantLinearOptions& options);

}  // namespace nibble::cpu
