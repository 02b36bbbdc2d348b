#include "quantize/nvfp4_quantizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"

namespace nibble::quantize {

quant::QuantizedTensor quantize_nvfp4(std::span<const float> w, int64_t rows, int64_t cols,
                                      float global_amax) {
  NIBBLE_CHECK(rows > 0 && cols > 0 && int64_t(w.size()) == rows * cols && cols % 16 == 0,
               "quantize_nvfp4: [{}, {}] weight (K must be a multiple of the block of 16)", rows,
               cols);
  quant::QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = quant::ElemType::Fp4E2M1;
  t.scale_dtype = quant::ScaleDType::E4M3;
  quant::allocate_codes(t);
  quant::set_scale_layout(t, 1, 16);
  const float global = global_amax > 0.0f ? global_amax / (6.0f * 448.0f) : 1.0f;
  t.global_scale = global;
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t b = 0; b < cols / 16; ++b) {
      const float* v = w.data() + n * cols + b * 16;
      float amax = 0.0f;
      for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(v[i]));
      float block = amax / (6.0f * global);
      if (block == 0.0f) block = 1.0f;
      const float s = fp8_e4m3_to_f32(quant::f32_to_fp8_e4m3(block));
      t.scales[size_t(n * t.scale_cols + b)] = s;
      const float denom = s * global;
      for (int i = 0; i < 16; ++i) {
        const float x = denom > 0.0f ? std::clamp(v[i] / denom, -6.0f, 6.0f) : 0.0f;
        quant::set_code(t, n, b * 16 + i, quant::f32_to_fp4_e2m1(x));
      }
    }
  }
  return t;
}

}  // namespace nibble::quantize
