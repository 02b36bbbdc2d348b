#include "backend/cpu/quant/activation_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/numeric.h"
#include "quant/reference/fp8.h"
#include "quant/types.h"

namespace nibble::cpu {
namespace {

using quant::ActQuantKind;

float abs_max(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

float static_scale(const quant::ActQuant& act) {
  NIBBLE_CHECK(act.input_scale && *act.input_scale > 0.0f && std::isfinite(*act.input_scale),
               "static activation quantization needs a positive input_scale, got {}",
               act.input_scale ? *act.input_scale : 0.0f);
  return *act.input_scale;
}

// round(x / s) clamped to [lo, hi]; NaN gives 0.
int32_t round_clamp(float x, float s, int32_t lo, int32_t hi) {
  const float q = std::nearbyint(x / s);
  if (!(q == q)) return 0;
  return int32_t(std::clamp(q, float(lo), float(hi)));
}

float fp8_round_trip(float v) { return fp8_e4m3_to_f32(quant::f32_to_fp8_e4m3(v)); }

void fake_fp8(const float* x, int64_t n, float s, float* out) {
  if (s == 0.0f) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    out[i] = fp8_round_trip(std::clamp(x[i] / s, -448.0f, 448.0f)) * s;
}

void fake_nvfp4_row(const float* x, int64_t n, const quant::ActQuant& act, float* out) {
  const float global = act.input_scale ? *act.input_scale : abs_max(x, n) / (6.0f * 448.0f);
  for (int64_t b = 0; b < n; b += 16) {
    const int64_t len = std::min<int64_t>(16, n - b);
    const float block = global > 0.0f ? fp8_round_trip(abs_max(x + b, len) / 6.0f / global) : 0.0f;
    const float s = block * global;
    for (int64_t i = b; i < b + len; ++i) {
      if (s == 0.0f || !std::isfinite(s)) {
        out[i] = 0.0f;
        continue;
      }
      const uint8_t code = quant::f32_to_fp4_e2m1(x[i] / s);
      const float mag = quant::kE2M1Values[code & 7];
      out[i] = ((code & 8) ? -mag : mag) * s;
    }
  }
}

}  // namespace

bool int8_kernel_activations(const quant::ActQuant& act) {
  if (act.kind == ActQuantKind::DynamicPerTokenInt8) return true;
  return act.kind == ActQuantKind::StaticPerTensorInt8 &&
         (!act.input_zero_point || *act.input_zero_point == 0);
}

void quantize_activations_int8(const quant::ActQuant& act, const float* x, int64_t m_rows,
                               int64_t cols, const int32_t* perm, int64_t k_padded, int8_t* xq,
                               float* scales, int64_t group, int64_t n_groups, int32_t* xsum) {
  const bool is_static = act.kind == ActQuantKind::StaticPerTensorInt8;
  const float fixed = is_static ? static_scale(act) : 0.0f;
  for (int64_t r = 0; r < m_rows; ++r) {
    const float* row = x + r * cols;
    int8_t* q = xq + r * k_padded;
    const float s = is_static ? fixed : abs_max(row, cols) / 127.0f;
    scales[r] = s;
    for (int64_t k = 0; k < cols; ++k) {
      const float v = row[perm ? perm[k] : k];
      q[k] = s == 0.0f ? int8_t(0) : int8_t(round_clamp(v, s, -127, 127));
    }
    std::memset(q + cols, 0, size_t(k_padded - cols));
    if (!xsum) continue;
    for (int64_t g = 0; g < n_groups; ++g) {
      int32_t sum = 0;
      for (int64_t k = g * group; k < std::min(k_padded, (g + 1) * group); ++k) sum += q[k];
      xsum[r * n_groups + g] = sum;
    }
  }
}

void quantize_activations_int8_per_group(const float* x, int64_t m_rows, int64_t cols,
                                         const int32_t* perm, int64_t k_padded, int64_t group,
                                         int64_t n_groups, int8_t* xq, float* group_scales,
                                         float* scaled_sums) {
  for (int64_t r = 0; r < m_rows; ++r) {
    const float* row = x + r * cols;
    int8_t* q = xq + r * k_padded;
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t begin = g * group, end = std::min(cols, (g + 1) * group);
      float amax = 0.0f;
      for (int64_t k = begin; k < end; ++k)
        amax = std::max(amax, std::fabs(row[perm ? perm[k] : k]));
      const float s = amax / 127.0f;
      int32_t sum = 0;
      for (int64_t k = begin; k < end; ++k) {
        const int32_t v = s == 0.0f ? 0 : round_clamp(row[perm ? perm[k] : k], s, -127, 127);
        q[k] = int8_t(v);
        sum += v;
      }
      group_scales[r * n_groups + g] = s;
      scaled_sums[r * n_groups + g] = s * float(sum);
    }
    if (k_padded > cols) std::memset(q + cols, 0, size_t(k_padded - cols));
  }
}

void fake_quantize_activations(const quant::ActQuant& act, const float* x, int64_t m_rows,
                               int64_t cols, float* out) {
  for (int64_t r = 0; r < m_rows; ++r) {
    const float* row = x + r * cols;
    float* o = out + r * cols;
    switch (act.kind) {
      case ActQuantKind::None: std::copy(row, row + cols, o); break;
      case ActQuantKind::DynamicPerTokenInt8: {
        const float s = abs_max(row, cols) / 127.0f;
        for (int64_t k = 0; k < cols; ++k)
          o[k] = s == 0.0f ? 0.0f : float(round_clamp(row[k], s, -127, 127)) * s;
        break;
      }
      case ActQuantKind::StaticPerTensorInt8: {
        const float s = static_scale(act);
        const int32_t z = act.input_zero_point.value_or(0);
        const int32_t lo = z == 0 ? -127 : -128;
        for (int64_t k = 0; k < cols; ++k) {
          const float q = std::nearbyint(row[k] / s);
          const int32_t qz = q == q ? int32_t(std::clamp(q + float(z), float(lo), 127.0f)) : z;
          o[k] = float(qz - z) * s;
        }
        break;
      }
      case ActQuantKind::DynamicPerTokenFp8:
        fake_fp8(row, cols, abs_max(row, cols) / 448.0f, o);
        break;
      case ActQuantKind::DynamicPerTokenGroupFp8: {
        const int64_t g = act.group_size > 0 ? act.group_size : 128;
        for (int64_t b = 0; b < cols; b += g) {
          const int64_t len = std::min(g, cols - b);
          fake_fp8(row + b, len, abs_max(row + b, len) / 448.0f, o + b);
        }
        break;
      }
      case ActQuantKind::StaticPerTensorFp8: fake_fp8(row, cols, static_scale(act), o); break;
      case ActQuantKind::Nvfp4: fake_nvfp4_row(row, cols, act, o); break;
    }
  }
}

}  // namespace nibble::cpu
