#include "backend/cpu/quant/reference_kernels.h"

#include <cstring>

#include "core/numeric.h"
#include "quant/types.h"

namespace nibble::cpu {

bool quant_codes_are_4bit(QuantCodes kind) {
  return kind == QuantCodes::U4Sym || kind == QuantCodes::U4 || kind == QuantCodes::Nf4 ||
         kind == QuantCodes::Fp4E2M1;
}

float quant_code_value(QuantCodes kind, uint32_t code) {
  switch (kind) {
    case QuantCodes::U4Sym: return float(int(code & 0xF) - 8);
    case QuantCodes::U4: return float(code & 0xF);
    case QuantCodes::S8: return float(int8_t(uint8_t(code)));
    case QuantCodes::Fp8E4M3: return fp8_e4m3_to_f32(uint8_t(code));
    case QuantCodes::Fp8E5M2: return fp8_e5m2_to_f32(uint8_t(code));
    case QuantCodes::Nf4: return quant::kNf4Values[code & 0xF];
    case QuantCodes::Fp4E2M1: {
      const float magnitude = quant::kE2M1Values[code & 7];
      return (code & 8) ? -magnitude : magnitude;
    }
  }
  return 0.0f;
}

uint32_t quant_packed_code(QuantCodes kind, const uint8_t* row, int64_t k) {
  if (!quant_codes_are_4bit(kind)) return row[k];
  const int64_t chunk = k / 32, e = k % 32;
  const uint8_t byte = row[chunk * 16 + (e % 16)];
  return e < 16 ? (byte & 0xF) : (byte >> 4);
}

uint32_t quant_packed_code(const QuantMatmulArgs& a, const uint8_t* row, int64_t k) {
  const int64_t paired = a.k / 64 * 64;  // elements in whole 64-element blocks
  if (!a.nibbles64 || !quant_codes_are_4bit(a.codes_kind) || k >= paired)
    return quant_packed_code(a.codes_kind, row, k);
  const int64_t block = k / 64, e = k % 64;
  const uint8_t byte = row[block * 32 + (e % 32)];
  return e < 32 ? (byte & 0xF) : (byte >> 4);
}

float quant_param(const void* params, bool f16, int64_t index) {
  if (f16) return f16_to_f32(static_cast<const uint16_t*>(params)[index]);
  return static_cast<const float*>(params)[index];
}

void quant_matmul_a16_reference(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = a.codes + n * a.code_row_bytes;
    for (int64_t m = 0; m < a.m_rows; ++m) {
      const float* x = a.x + m * a.ldx;
      double acc = 0.0;
      for (int64_t k = 0; k < a.k; ++k) {
        const int64_t g = n * a.n_groups + k / a.group_size;
        double w = double(quant_code_value(a.codes_kind, quant_packed_code(a, row, k))) *
                   double(quant_param(a.scales, a.params_f16, g));
        if (a.mins) w += double(quant_param(a.mins, a.params_f16, g));
        acc += double(x[k]) * w;
      }
      if (a.bias) acc += a.bias[n];
      a.y[m * a.ldy + n] = float(acc);
    }
  }
}

void quant_matmul_a8_reference(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = a.codes + n * a.code_row_bytes;
    for (int64_t m = 0; m < a.m_rows; ++m) {
      const int8_t* xq = a.xq + m * a.ldx;
      double acc = 0.0;
      for (int64_t g = 0; g * a.group_size < a.k; ++g) {
        const int64_t k_end = (g + 1) * a.group_size < a.k ? (g + 1) * a.group_size : a.k;
        int64_t dot = 0;
        for (int64_t k = g * a.group_size; k < k_end; ++k) {
          const auto v = int64_t(quant_code_value(a.codes_kind, quant_packed_code(a, row, k)));
          dot += v * xq[k];
        }
        const double xs = a.x_group_scale ? double(a.x_group_scale[m * a.n_groups + g]) : 1.0;
        acc += double(quant_param(a.scales, a.params_f16, n * a.n_groups + g)) * xs * double(dot);
        if (a.mins) {
          acc += double(quant_param(a.mins, a.params_f16, n * a.n_groups + g)) *
                 (a.x_group_scale ? double(a.xgsum[m * a.n_groups + g])
                                  : double(a.xsum[m * a.n_groups + g]));
        }
      }
      if (!a.x_group_scale) acc *= double(a.x_scale[m]);
      if (a.bias) acc += a.bias[n];
      a.y[m * a.ldy + n] = float(acc);
    }
  }
}

}  // namespace nibble::cpu
