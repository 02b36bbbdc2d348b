// Importance-weighted Q4_0 / Q5_0 / Q4_K. Like the reference quantizers, every float operation
// is a separate f32 operation (no contraction), so the chosen blocks do not depend on whether
// the CPU has FMA.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "formats/gguf/gguf_weighted_quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_kquant.h"

namespace nibble::gguf {
namespace {

constexpr int kBlock = 32;  // Q4_0 / Q5_0 block

int nearest(float x) { return static_cast<int>(std::nearbyint(x)); }

// Symmetric codes L ∈ [0, 2·nmax) with value d·(L − nmax) by weighted least squares, as
// llama.cpp's make_qx_quants with weights: the signed absmax fixes the grid's orientation
// (d < 0 when the extreme is positive, so the extreme lands on code 0, as the reference does);
// 19 candidate inverse scales −(nmax + 0.1·i)/max are tried and the one whose least-squares
// scale explains most weighted energy (Σwxl)²/Σwl² is kept. Returns d.
float fit_symmetric(const float* x, const float* w, int nmax, std::array<int, kBlock>& codes) {
  float max = 0, amax = 0;
  for (int i = 0; i < kBlock; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    codes.fill(nmax);  // value 0 (the reference writes d = 0 and code nmax too)
    return 0.0f;
  }
  const auto code_of = [nmax](float v) { return std::clamp(nearest(v), -nmax, nmax - 1); };
  float inv = static_cast<float>(-nmax) / max;
  float sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < kBlock; ++i) {
    const int l = code_of(inv * x[i]);
    codes[static_cast<size_t>(i)] = l + nmax;
    const float lf = static_cast<float>(l);
    sum_lx += w[i] * x[i] * lf;
    sum_l2 += w[i] * lf * lf;
  }
  float scale = sum_l2 != 0.0f ? sum_lx / sum_l2 : 0.0f;
  float best = scale * sum_lx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    inv = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / max;
    sum_lx = sum_l2 = 0;
    for (int i = 0; i < kBlock; ++i) {
      const float lf = static_cast<float>(code_of(inv * x[i]));
      sum_lx += w[i] * x[i] * lf;
      sum_l2 += w[i] * lf * lf;
    }
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      for (int i = 0; i < kBlock; ++i) codes[static_cast<size_t>(i)] = code_of(inv * x[i]) + nmax;
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

void store_f16(uint8_t* dst, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(dst, &h, 2);
}

void encode_q4_0(float d, const std::array<int, kBlock>& q, uint8_t* b) {
  store_f16(b, d);
  for (int j = 0; j < 16; ++j)
    b[2 + j] =
        static_cast<uint8_t>(q[static_cast<size_t>(j)] | (q[static_cast<size_t>(j + 16)] << 4));
}

void encode_q5_0(float d, const std::array<int, kBlock>& q, uint8_t* b) {
  store_f16(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < kBlock; ++j) qh |= uint32_t(q[static_cast<size_t>(j)] >> 4) << j;
  std::memcpy(b + 2, &qh, 4);
  for (int j = 0; j < 16; ++j)
    b[6 + j] = static_cast<uint8_t>((q[static_cast<size_t>(j)] & 0xF) |
                                    ((q[static_cast<size_t>(j + 16)] & 0xF) << 4));
}

double block_error(GgmlType type, const float* x, const float* qw, const uint8_t* block,
                   int64_t n) {
  std::array<float, kQ4KBlockElems> deq{};
  dequantize_row(type, block, deq.data(), n);
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = double(x[i]) - double(deq[static_cast<size_t>(i)]);
    err += double(qw[i]) * diff * diff;
  }
  return err;
}

}  // namespace

bool can_quantize_weighted(GgmlType type) {
  return type == GgmlType::Q4_0 || type == GgmlType::Q5_0 || type == GgmlType::Q4_K;
}

void quantize_row_weighted(GgmlType type, const float* src, const float* importance, uint8_t* dst,
                           int64_t n) {
  if (importance == nullptr) return quantize_row(type, src, dst, n);
  NIBBLE_CHECK(can_quantize_weighted(type),
               "importance-weighted quantization to ggml type {} is not supported (Q4_0, Q5_0, "
               "Q4_K)",
               type_name(type));
  const auto traits = type_traits(type);
  NIBBLE_CHECK(traits && n >= 0 && n % traits->block_elems == 0,
               "{}: {} elements is not a whole number of {}-element blocks", type_name(type), n,
               traits ? traits->block_elems : 0);
  for (int64_t i = 0; i < n; ++i)
    NIBBLE_CHECK(std::isfinite(importance[i]) && importance[i] >= 0.0f,
                 "importance of column {} is {} (expected a finite value ≥ 0)", i, importance[i]);
  const int64_t block = traits->block_elems;
  const auto block_bytes = static_cast<size_t>(traits->block_bytes);
  // Q4_0 / Q5_0 take σ² over the whole row, Q4_K over each super-block (as llama.cpp).
  float sum_x2 = 0;
  for (int64_t i = 0; i < n; ++i) sum_x2 += src[i] * src[i];
  const float sigma2 = n > 0 ? sum_x2 / static_cast<float>(n) : 0.0f;
  const int nmax = type == GgmlType::Q4_0 ? 8 : 16;

  std::vector<uint8_t> reference(block_bytes), candidate(block_bytes);
  std::array<float, kQ4KBlockElems> qw{};
  for (int64_t b = 0; b < n / block; ++b) {
    const float* x = src + b * block;
    uint8_t* out = dst + static_cast<size_t>(b) * block_bytes;
    quantize_row(type, x, reference.data(), block);
    float qmax = 0;
    for (int64_t i = 0; i < block; ++i) qmax = std::max(qmax, importance[b * block + i]);
    if (!(qmax > 0.0f)) {  // no column of this block was ever active: nothing to weigh
      std::memcpy(out, reference.data(), block_bytes);
      continue;
    }
    for (int64_t i = 0; i < block; ++i)
      qw[static_cast<size_t>(i)] = importance[b * block + i] / qmax;
    if (type == GgmlType::Q4_K) {
      quantize_block_q4_k_weighted(x, qw.data(), candidate.data());
    } else {
      std::array<float, kBlock> w{};
      for (int i = 0; i < kBlock; ++i)
        w[static_cast<size_t>(i)] = qw[static_cast<size_t>(i)] * std::sqrt(sigma2 + x[i] * x[i]);
      std::array<int, kBlock> codes{};
      const float d = fit_symmetric(x, w.data(), nmax, codes);
      if (type == GgmlType::Q4_0) {
        encode_q4_0(d, codes, candidate.data());
      } else {
        encode_q5_0(d, codes, candidate.data());
      }
    }
    const bool better = block_error(type, x, qw.data(), candidate.data(), block) <
                        block_error(type, x, qw.data(), reference.data(), block);
    std::memcpy(out, better ? candidate.data() : reference.data(), block_bytes);
  }
}

double weighted_squared_error(GgmlType type, const float* src, const float* importance,
                              const uint8_t* blocks, int64_t n) {
  std::vector<float> deq(static_cast<size_t>(n));
  dequantize_row(type, blocks, deq.data(), n);
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = double(src[i]) - double(deq[static_cast<size_t>(i)]);
    err += double(importance[i]) * diff * diff;
  }
  return err;
}

}  // namespace nibble::gguf
