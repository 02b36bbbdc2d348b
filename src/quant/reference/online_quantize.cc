// Products and quotients here must round exactly as torch's elementwise ops do: one rounding
// per op, no fused multiply-add.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/reference/online_quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/types.h"

namespace nibble::quant {
namespace {

void check_shape(std::span<const float> w, int64_t rows, int64_t cols, const char* what) {
  NIBBLE_CHECK(rows > 0 && cols > 0 && int64_t(w.size()) == rows * cols,
               "{}: {} values for a [{}, {}] weight", what, w.size(), rows, cols);
}

ScaleDType scale_tag(TorchDType dtype) {
  return dtype == TorchDType::BF16 ? ScaleDType::BF16 : ScaleDType::F32;
}

// Index of the table entry nearest to x; the first one on a tie (torch.argmin).
int nearest_entry(const float* table, int size, float x) {
  int best = 0;
  float best_diff = std::fabs(x - table[0]);
  for (int i = 1; i < size; ++i) {
    const float diff = std::fabs(x - table[i]);
    if (diff < best_diff) {
      best = i;
      best_diff = diff;
    }
  }
  return best;
}

}  // namespace

float torch_round(float x, TorchDType dtype) {
  return dtype == TorchDType::BF16 ? bf16_to_f32(f32_to_bf16(x)) : x;
}

QuantizedTensor quantize_torchao_int8(std::span<const float> w, int64_t rows, int64_t cols,
                                      TorchDType dtype) {
  check_shape(w, rows, cols, "quantize_torchao_int8");
  const auto r = [dtype](float x) { return torch_round(x, dtype); };
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = ElemType::Int8;
  t.scale_dtype = scale_tag(dtype);
  allocate_codes(t);
  set_scale_layout(t, 1, cols);
  // torchao passes eps = torch.finfo(torch.float32).eps for both int8 configs.
  const float eps = r(FLT_EPSILON);
  for (int64_t n = 0; n < rows; ++n) {
    const float* row = w.data() + n * cols;
    float amax = 0.0f;
    for (int64_t k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(r(row[k])));
    const float scale = std::max(r(amax / 127.5f), eps);
    const float inverse = r(1.0f / scale);
    t.scales[static_cast<size_t>(n)] = scale;
    for (int64_t k = 0; k < cols; ++k) {
      const float q = std::nearbyint(r(r(row[k]) * inverse));
      set_code(t, n, k,
               static_cast<uint32_t>(static_cast<int32_t>(std::clamp(q, -128.0f, 127.0f))) & 0xffu);
    }
  }
  return t;
}

QuantizedTensor quantize_torchao_int4(std::span<const float> w, int64_t rows, int64_t cols,
                                      int64_t group_size, TorchDType dtype) {
  check_shape(w, rows, cols, "quantize_torchao_int4");
  NIBBLE_CHECK(group_size > 0 && cols % group_size == 0,
               "quantize_torchao_int4: K={} is not a multiple of the group size {}", cols,
               group_size);
  const auto r = [dtype](float x) { return torch_round(x, dtype); };
  // tinygemm keeps zeros in bf16 whatever the weight dtype.
  const auto r_zero = [](float x) { return torch_round(x, TorchDType::BF16); };
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = ElemType::UInt4;
  t.zero_kind = ZeroKind::Float;
  t.scale_dtype = scale_tag(dtype);
  allocate_codes(t);
  set_scale_layout(t, 1, group_size);
  constexpr float kMid = 8.0f;  // (quant_max + quant_min + 1) / 2
  for (int64_t n = 0; n < rows; ++n) {
    for (int64_t g = 0; g < t.scale_cols; ++g) {
      const float* x = w.data() + n * cols + g * group_size;
      float lo = r(x[0]), hi = r(x[0]);
      for (int64_t k = 1; k < group_size; ++k) {
        lo = std::min(lo, r(x[k]));
        hi = std::max(hi, r(x[k]));
      }
      const float scale = r(std::max(r(r(hi - lo) / 15.0f), 1e-6f));
      const float zero = r_zero(r(lo + r(scale * kMid)));
      // quantize_affine recomputes the group minimum from the stored zero and scale.
      const float group_min = r(zero - r(scale * kMid));
      const auto s = static_cast<size_t>(n * t.scale_cols + g);
      t.scales[s] = scale;
      t.float_zeros[s] = zero - scale * kMid;
      for (int64_t k = 0; k < group_size; ++k) {
        const float q = std::nearbyint(r(r(r(x[k]) - group_min) / scale));
        set_code(t, n, g * group_size + k, static_cast<uint32_t>(std::clamp(q, 0.0f, 15.0f)));
      }
    }
  }
  return t;
}

QuantizedTensor quantize_torchao_fp8(std::span<const float> w, int64_t rows, int64_t cols,
                                     bool per_tensor, TorchDType dtype) {
  check_shape(w, rows, cols, "quantize_torchao_fp8");
  const auto r = [dtype](float x) { return torch_round(x, dtype); };
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = ElemType::Fp8E4M3;
  t.scale_dtype = scale_tag(dtype);
  allocate_codes(t);
  if (per_tensor)
    set_scale_layout(t, rows, cols);
  else
    set_scale_layout(t, 1, cols);
  std::vector<float> amax(t.scales.size(), 0.0f);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k) {
      float& a = amax[per_tensor ? 0 : static_cast<size_t>(n)];
      a = std::max(a, std::fabs(r(w[static_cast<size_t>(n * cols + k)])));
    }
  for (size_t i = 0; i < amax.size(); ++i) t.scales[i] = amax[i] > 0 ? r(amax[i] / 448.0f) : 1.0f;
  for (int64_t n = 0; n < rows; ++n) {
    const float scale = t.scales[per_tensor ? 0 : static_cast<size_t>(n)];
    for (int64_t k = 0; k < cols; ++k) {
      const float x = std::clamp(r(w[static_cast<size_t>(n * cols + k)]) / scale, -448.0f, 448.0f);
      set_code(t, n, k, f32_to_fp8_e4m3(x));
    }
  }
  return t;
}

const std::vector<float>& bnb_dynamic_map() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each decade
  // 10^(i-6), i = 0..6, the midpoints of 2^i + 1 evenly spaced points in [0.1, 1], with both
  // signs, plus 0 and 1. Computed in double and rounded once (torch builds it in f32; the
  // values agree to the last bit or one ulp, and checkpoints carry their own copy).
  static const std::vector<float> map = [] {
    std::vector<float> values;
    for (int i = 0; i < 7; ++i) {
      const int points = (1 << i) + 1;
      const double decade = std::pow(10.0, i - 6);
      for (int p = 0; p + 1 < points; ++p) {
        const double a = 0.1 + 0.9 * p / (points - 1);
        const double b = 0.1 + 0.9 * (p + 1) / (points - 1);
        const auto v = static_cast<float>(decade * ((a + b) / 2.0));
        values.push_back(v);
        values.push_back(-v);
      }
    }
    values.push_back(0.0f);
    values.push_back(1.0f);
    std::sort(values.begin(), values.end());
    return values;
  }();
  return map;
}

QuantizedTensor quantize_bnb_4bit(std::span<const float> w, int64_t rows, int64_t cols,
                                  const Bnb4bitOptions& options) {
  check_shape(w, rows, cols, "quantize_bnb_4bit");
  const int64_t block = options.blocksize;
  NIBBLE_CHECK(block > 0 && cols % block == 0,
               "bitsandbytes 4-bit: K={} is not a multiple of the blocksize {}", cols, block);
  const int64_t n_blocks = rows * cols / block;
  std::vector<float> absmax(static_cast<size_t>(n_blocks), 0.0f);
  for (int64_t b = 0; b < n_blocks; ++b)
    for (int64_t i = 0; i < block; ++i)
      absmax[size_t(b)] = std::max(absmax[size_t(b)], std::fabs(w[size_t(b * block + i)]));

  float table[16];
  for (int c = 0; c < 16; ++c) {
    if (options.fp4) {
      const float m = kBnbFp4Magnitudes12[c & 7] / 12.0f;
      table[c] = (c & 8) ? -m : m;
    } else {
      table[c] = kNf4Values[c];
    }
  }

  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.elem = options.fp4 ? ElemType::Fp8E4M3 : ElemType::Nf4;
  allocate_codes(t);
  set_scale_layout(t, 1, block);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float a = absmax[size_t(b)];
    for (int64_t i = 0; i < block; ++i) {
      const int64_t flat = b * block + i;
      // An all-zero block divides 0 by 0 in bitsandbytes too; its codes only ever multiply 0.
      const float x = a > 0 ? std::clamp(w[size_t(flat)] / a, -1.0f, 1.0f) : 0.0f;
      const int c = nearest_entry(table, 16, x);
      const uint32_t code = options.fp4 ? f32_to_fp8_e4m3((c & 8) ? -kBnbFp4Magnitudes12[c & 7]
                                                                  : kBnbFp4Magnitudes12[c & 7])
                                        : static_cast<uint32_t>(c);
      set_code(t, flat / cols, flat % cols, code);
    }
  }

  std::vector<float> scales = absmax;
  if (options.compress_statistics) {
    double sum = 0;
    for (float a : absmax) sum += a;
    const auto offset = static_cast<float>(sum / static_cast<double>(n_blocks));
    const std::vector<float>& code = bnb_dynamic_map();
    constexpr int64_t kNested = 256;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += kNested) {
      const int64_t b1 = std::min(n_blocks, b0 + kNested);
      float nested_absmax = 0.0f;
      for (int64_t b = b0; b < b1; ++b)
        nested_absmax = std::max(nested_absmax, std::fabs(absmax[size_t(b)] - offset));
      for (int64_t b = b0; b < b1; ++b) {
        const float centred = absmax[size_t(b)] - offset;
        const float x = nested_absmax > 0 ? centred / nested_absmax : 0.0f;
        const int q = nearest_entry(code.data(), static_cast<int>(code.size()), x);
        scales[size_t(b)] = code[size_t(q)] * nested_absmax + offset;
      }
    }
  }
  for (size_t b = 0; b < scales.size(); ++b)
    t.scales[b] = options.fp4 ? scales[b] / 12.0f : scales[b];
  return t;
}

}  // namespace nibble::quant
