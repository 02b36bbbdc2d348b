#pragma once
// A quantized weight repacked once, at load, into the layout of the quantized CPU kernels
// (kernel_table.h, QuantMatmulArgs): codes in 32-element chunks, one scale (and optionally one
// min) per row and group, stored as f16 when every one of them is exactly an f16 number (decode
// is memory-bound: bytes per weight are the speed) and as f32 otherwise.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/kernel_table.h"
#include "core/huge_page_allocator.h"
#include "quant/scheme.h"

namespace nibble::cpu {

struct PackedQuantWeight {
  QuantCodes codes_kind = QuantCodes::U4Sym;
  int64_t rows = 0;      // N
  int64_t cols = 0;      // K
  int64_t k_padded = 0;  // K rounded up to 32
  int64_t group_size = 32;
  int64_t n_groups = 0;
  HugePageVector<uint8_t> codes;
  int64_t code_row_bytes = 0;
  bool nibbles64 = false;  // 4-bit codes in the int8-activation kernels' form (kernel_table.h)
  bool params_f16 = false;
  bool has_mins = false;
  std::vector<uint16_t> scales_f16, mins_f16;
  std::vector<float> scales_f32, mins_f32;
  // Act-order (GPTQ desc_act): the packed K order is x[k_permutation[k']]; empty when the
  // order is the natural one.
  std::vector<int32_t> k_permutation;
  std::string source;  // what it was packed from, for describe(): "uint4 g128", "gguf q4_k"

  const void* scales() const;
  const void* mins() const;  // null without mins
  size_t nbytes() const;
  // Arguments for the kernels, weight fields only.
  QuantMatmulArgs kernel_args() const;
};

// Repacks `t` for the kernels, or nullopt when no kernel takes its layout (the caller then
// falls back to a dense matrix). Exact: every weight of the packed form equals the reference
// dequantization up to the rounding of one f32 product (scale * global scale, or -scale * zero).
std::optional<PackedQuantWeight> pack_quantized_weight(const quant::QuantizedTensor& t);

// Rewrites 4-bit codes into the 64-element form the int8-activation kernels read fastest, when
// no 64-element block would straddle two groups (G = 32, G a multiple of 64, or one group per
// row); otherwise, and for 8-bit codes, leaves `w` as it is.
void use_nibbles64(PackedQuantWeight& w);

}  // namespace nibble::cpu
