#pragma once
// Per-input-channel rescaling that makes a linear group easier to quantize without changing
// what the layer computes: X·Wᵀ = (X·diag(s)⁻¹)·(W·diag(s))ᵀ, with 1/s folded into the op that
// produces X (the RMSNorm weight). SmoothQuant (Xiao et al.) picks s to move activation
// outliers into the weights for int8 activations; AWQ (Lin et al.) searches s to protect the
// weight channels that meet large activations, then searches per-group clipping.
#include <cstdint>
#include <vector>

#include "quantize/int_quantizer.h"

namespace nibble::quantize {

// One linear of a group that shares an input: W[rows, K] (modified in place by the callers).
struct GroupWeight {
  std::vector<float>* w = nullptr;
  int64_t rows = 0;
};

// s_j = max|X_j|^α / max_i|W_ij|^(1−α) over every weight of the group, clamped to ≥ 1e-5
// (SmoothQuant's formula); channels that never see input get s = 1.
std::vector<float> smoothquant_scales(const std::vector<float>& act_max,
                                      const std::vector<GroupWeight>& weights, int64_t k,
                                      float alpha);

// W[:, j] *= s_j for every weight of the group.
void scale_weight_columns(const std::vector<GroupWeight>& weights, int64_t k,
                          const std::vector<float>& s);

// AWQ's grid search: s = mean|X|^α normalised by sqrt(max·min), α ∈ {0, 1/n, ..., (n−1)/n},
// minimising the group's output error ‖X·Wᵀ − X·(Q(W·diag(s))·diag(s)⁻¹)ᵀ‖² on the rows x[m, K].
// Returns s (all ones when α = 0 wins) and the chosen α in `alpha`.
std::vector<float> awq_search_scales(const std::vector<float>& x, int64_t m,
                                     const std::vector<float>& mean_abs,
                                     const std::vector<GroupWeight>& weights, int64_t k,
                                     const IntQuantOptions& options, int n_grid, float& alpha);

// AWQ's clipping search: for each row and group, the max |w| shrunk by up to `max_shrink` that
// minimises that group's output error on x[m, K]; W is clamped to the winner in place.
void awq_clip(std::vector<float>& w, int64_t rows, int64_t k, const std::vector<float>& x,
              int64_t m, const IntQuantOptions& options, int n_grid = 20, float max_shrink = 0.5f);

}  // namespace nibble::quantize
