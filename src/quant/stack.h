#pragma once
// Fusing the linear layers that read the same input (q/k/v, gate/up) into one weight by stacking
// their rows: one matmul launch instead of three, and one pass over the activations.
#include <optional>
#include <vector>

#include "quant/scheme.h"

namespace nibble::quant {

// The rows of `parts`, in order, as one QuantizedTensor; nullopt when the parts cannot share one
// layout without changing a single dequantized value: different element or scale types, group
// sizes, act-order permutations, global scales, or 2-D scale blocks that a part boundary would
// cut. Per-tensor scales are expanded to per-row ones (each part keeps its own scale), so fp8
// checkpoints with one scale per projection stack exactly.
std::optional<QuantizedTensor> stack_rows(const std::vector<const QuantizedTensor*>& parts);

// Whether two layers quantize their (shared) input the same way, so a stacked weight can run
// them as one.
bool same_act_quant(const ActQuant& a, const ActQuant& b);

}  // namespace nibble::quant
