#include "quant/reference/quantize.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

void check_shape(std::span<const float> w, int64_t rows, int64_t cols, const char* what) {
  NIBBLE_CHECK(rows > 0 && cols > 0 && int64_t(w.size()) == rows * cols,
               "{}: {} values for a [{}, {}] weight", what, w.size(), rows, cols);
}

}  // namespace

QuantizedTensor quantize_rtn_int(std::span<const float> w, int64_t rows, int64_t cols,
                                 const RtnIntOptions& options) {
  check_shape(w, rows, cols, "quantize_rtn_int");
  const int bits = options.bits;
  const int64_t group = options.group_size == -1 ? cols : options.group_size;
  NIBBLE_CHECK(group > 0, "quantize_rtn_int: group size {} (expected -1 or > 0)",
               options.group_size);
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = options.symmetric ? signed_int_type(bits, "quantize_rtn_int")
                             : unsigned_int_type(bits, "quantize_rtn_int");
  t.zero_kind = options.symmetric ? ZeroKind::None : ZeroKind::Integer;
  allocate_codes(t);
  set_scale_layout(t, 1, group);
  const int32_t qmin = options.symmetric ? -(1 << (bits - 1)) : 0;
  const int32_t qmax = options.symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t g = 0; g < t.scale_cols; ++g) {
      const int64_t k0 = g * group, k1 = std::min(cols, k0 + group);
      float lo = 0.0f, hi = 0.0f;
      for (int64_t k = k0; k < k1; ++k) {
        lo = std::min(lo, w[size_t(n * cols + k)]);
        hi = std::max(hi, w[size_t(n * cols + k)]);
      }
      const auto s = static_cast<size_t>(n * t.scale_cols + g);
      float scale;
      int32_t zero = 0;
      if (options.symmetric) {
        const float amax = std::max(-lo, hi);
        scale = amax / (static_cast<float>(qmax - qmin) / 2.0f);
      } else {
        scale = (hi - lo) / static_cast<float>(qmax);
      }
      if (scale == 0.0f) scale = 1.0f;
      if (!options.symmetric) {
        zero = std::clamp(static_cast<int32_t>(std::nearbyint(-lo / scale)), 0, qmax);
        t.int_zeros[s] = zero;
      }
      t.scales[s] = scale;
      for (int64_t k = k0; k < k1; ++k) {
        const float x = w[size_t(n * cols + k)];
        const int32_t q =
            std::clamp(static_cast<int32_t>(std::nearbyint(x / scale)) + zero, qmin, qmax);
        set_code(t, n, k, static_cast<uint32_t>(q) & ((1u << bits) - 1));
      }
    }
  }
  return t;
}

QuantizedTensor quantize_fp8_e4m3(std::span<const float> w, int64_t rows, int64_t cols,
                                  Fp8Granularity granularity, int64_t block_rows,
                                  int64_t block_cols) {
  check_shape(w, rows, cols, "quantize_fp8_e4m3");
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = ElemType::Fp8E4M3;
  allocate_codes(t);
  switch (granularity) {
    case Fp8Granularity::PerTensor: set_scale_layout(t, rows, cols); break;
    case Fp8Granularity::PerChannel: set_scale_layout(t, 1, cols); break;
    case Fp8Granularity::Block:
      NIBBLE_CHECK(block_rows > 0 && block_cols > 0, "quantize_fp8_e4m3: block [{}, {}]",
                   block_rows, block_cols);
      set_scale_layout(t, block_rows, block_cols);
      break;
  }
  std::vector<float> amax(t.scales.size(), 0.0f);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k) {
      auto& a = amax[size_t(scale_index(t, n, k))];
      a = std::max(a, std::fabs(w[size_t(n * cols + k)]));
    }
  for (size_t i = 0; i < amax.size(); ++i) t.scales[i] = amax[i] > 0 ? amax[i] / 448.0f : 1.0f;
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k) {
      const float scale = t.scales[size_t(scale_index(t, n, k))];
      const float x = std::clamp(w[size_t(n * cols + k)] / scale, -448.0f, 448.0f);
      set_code(t, n, k, f32_to_fp8_e4m3(x));
    }
  return t;
}

}  // namespace nibble::quant
