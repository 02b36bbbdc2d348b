#pragma once
// Shared step of the integer loaders: unsigned codes whose every zero point is 2^(b-1) (GPTQ
// sym, uint4b8 / uint8b128) become signed codes with no zeros — the same values, one form
// for kernels. Flipping the top bit turns q into the two's complement of q - 2^(b-1).
#include <algorithm>

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

}  // namespace nibble::quant
