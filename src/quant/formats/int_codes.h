#pragma once
// Shared step of the integer loaders: unsigned codes whose every zero point is 2^(b-1) (GPTQ
// sym, uint4b8 / uint8b128) become signed codes with no zeros — the same values, one form
// for kernels. Flipping the top bit turns q into the two's complement of q - 2^(b-1).
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::quant {

inline void make_signed_if_symmetric(QuantizedTensor& t) {
  if (t.zero_kind != ZeroKind::Integer) return;
  const int bits = elem_bits(t.elem);
  const int32_t mid = 1 << (bits - 1);
  if (!std::all_of(t.int_zeros.begin(), t.int_zeros.end(), [&](int32_t z) { return z == mid; }))
    return;
  for (int64_t n = 0; n < t.rows; ++n)
    for (int64_t k = 0; k < t.cols; ++k) set_code(t, n, k, get_code(t, n, k) ^ uint32_t(mid));
  t.elem = signed_int_type(bits, "quant");
  t.zero_kind = ZeroKind::None;
  t.int_zeros.clear();
}

// g_idx equal to k / G carries no information: drop it so kernels see plain groups.
inline void drop_trivial_g_idx(QuantizedTensor& t) {
  for (size_t k = 0; k < t.g_idx.size(); ++k)
    if (t.g_idx[k] != static_cast<int32_t>(int64_t(k) / t.scale_block_cols)) return;
  t.g_idx.clear();
}

// What a quantizer with GPTQ's grid produces (unsigned codes [rows][cols], a scale and an integer
// zero per row and group of `group` columns, the group of each column or nothing) as the
// canonical tensor the loaders produce: signed codes without zeros when every zero is 2^(b−1),
// trivial g_idx dropped. Shared by the host and GPU quantizers.
template <typename Code>
QuantizedTensor int_tensor_from_codes(int64_t rows, int64_t cols, int64_t group, int bits,
                                      ScaleDType scale_dtype, const std::vector<Code>& codes,
                                      std::vector<float> scales, std::vector<int32_t> zeros,
                                      std::vector<int32_t> g_idx) {
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = unsigned_int_type(bits, "quantize bits");
  t.zero_kind = ZeroKind::Integer;
  t.scale_dtype = scale_dtype;
  allocate_codes(t);
  set_scale_layout(t, 1, group);
  NIBBLE_CHECK(int64_t(scales.size()) == rows * t.scale_cols && zeros.size() == scales.size() &&
                   int64_t(codes.size()) == rows * cols,
               "quantize: {} scales, {} zeros and {} codes for a [{}, {}] weight in groups of {}",
               scales.size(), zeros.size(), codes.size(), rows, cols, group);
  t.scales = std::move(scales);
  t.int_zeros = std::move(zeros);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k) set_code(t, n, k, uint32_t(codes[size_t(n * cols + k)]));
  t.g_idx = std::move(g_idx);
  make_signed_if_symmetric(t);
  if (!t.g_idx.empty()) drop_trivial_g_idx(t);
  return t;
}

}  // namespace nibble::quant
