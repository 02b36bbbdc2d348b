// Q4_K reference quantizer. Every float operation is a separate f32 operation in the order
// llama.cpp's scalar C reference evaluates it, so a CPU with FMA and one without (and the
// AVX-512 CI machine) choose identical blocks: contraction is switched off for this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "formats/gguf/gguf_kquant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/numeric.h"

namespace nibble::gguf {
namespace {

constexpr int kSub = 32;                           // elements per sub-block
constexpr int kSubBlocks = kQ4KBlockElems / kSub;  // 8
constexpr int kLevels = 15;                        // 4-bit codes 0..15
constexpr int kScaleLevels = 63;                   // 6-bit scales and mins

// Round half to even, as llama.cpp's nearest_int (a magic-number add) for |x| < 2^22.
int nearest(float x) { return static_cast<int>(std::nearbyint(x)); }

struct SubBlockFit {
  float scale = 0.0f;  // > 0 unless the sub-block is constant
  float min = 0.0f;    // ≥ 0: the value subtracted, x ≈ scale·q − min
};

// Candidate inverse scales (nmax + start + step·i)/(max − min), i = 0..steps.
struct SearchGrid {
  float start, step;
  int steps;
};
// The reference quantizer's 21 candidates, and the 37 finer ones llama.cpp searches when an
// importance matrix is given.
constexpr SearchGrid kReferenceGrid{-1.0f, 0.1f, 20};
constexpr SearchGrid kWeightedGrid{-0.9f, 0.05f, 36};

// Weighted search for (scale, min) of one sub-block: start from the min/max fit, then try the
// grid's candidate inverse scales, solve the weighted least squares for scale and offset at the
// codes each candidate gives, and keep the lowest weighted squared error. The offset is never
// allowed above zero (a positive min is not representable).
SubBlockFit fit_sub_block(const float* x, const float* w, uint8_t* codes, SearchGrid grid) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < kSub; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::fill(codes, codes + kSub, uint8_t{0});
    return {0.0f, -lo};
  }
  float inv = kLevels / (hi - lo);
  float scale = 1 / inv;
  float best = 0;
  for (int i = 0; i < kSub; ++i) {
    const int q = std::clamp(nearest(inv * (x[i] - lo)), 0, kLevels);
    codes[i] = static_cast<uint8_t>(q);
    const float diff = scale * codes[i] + lo - x[i];
    best += w[i] * (diff * diff);
  }
  std::array<uint8_t, kSub> trial{};
  for (int step = 0; step <= grid.steps; ++step) {
    inv = (grid.start + grid.step * static_cast<float>(step) + kLevels) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < kSub; ++i) {
      const int q = std::clamp(nearest(inv * (x[i] - lo)), 0, kLevels);
      trial[static_cast<size_t>(i)] = static_cast<uint8_t>(q);
      const float wq = w[i] * q;
      sum_l += wq;
      sum_l2 += wq * q;
      sum_xl += wq * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < kSub; ++i) {
      const float diff = this_scale * trial[static_cast<size_t>(i)] + this_min - x[i];
      err += w[i] * (diff * diff);
    }
    if (err < best) {
      std::copy(trial.begin(), trial.end(), codes);
      best = err;
      scale = this_scale;
      lo = this_min;
    }
  }
  return {scale, -lo};
}

// Packs a super-block: f16 d and dmin, the 6-bit sub-block scales `sc` and mins `mn` (their
// multiples), and the 4-bit codes requantized against the scales as stored (a sub-block whose
// stored scale is 0 keeps the codes of its own fit in `codes`: they multiply 0).
void encode_block(const float* x, const std::array<int, kSubBlocks>& sc,
                  const std::array<int, kSubBlocks>& mn, float d_value, float dmin_value,
                  std::array<uint8_t, kQ4KBlockElems>& codes, uint8_t* out) {
  uint8_t packed[12] = {};
  for (int j = 0; j < kSubBlocks; ++j) {
    const auto s = static_cast<size_t>(j);
    // Sub-blocks 0-3 keep their 6 bits in bytes 0-7; 4-7 put their low nibbles in bytes 8-11
    // and their top two bits in the spare high bits of bytes 0-7.
    if (j < 4) {
      packed[j] = static_cast<uint8_t>(sc[s]);
      packed[j + 4] = static_cast<uint8_t>(mn[s]);
    } else {
      packed[j + 4] = static_cast<uint8_t>((sc[s] & 0xF) | ((mn[s] & 0xF) << 4));
      packed[j - 4] = static_cast<uint8_t>(packed[j - 4] | ((sc[s] >> 4) << 6));
      packed[j] = static_cast<uint8_t>(packed[j] | ((mn[s] >> 4) << 6));
    }
  }
  const uint16_t d_bits = f32_to_f16(d_value);
  const uint16_t dmin_bits = f32_to_f16(dmin_value);
  std::memcpy(out, &d_bits, 2);
  std::memcpy(out + 2, &dmin_bits, 2);
  std::memcpy(out + 4, packed, 12);

  const float d = f16_to_f32(d_bits), dmin = f16_to_f32(dmin_bits);
  for (int j = 0; j < kSubBlocks; ++j) {
    const auto s = static_cast<size_t>(j);
    const float ds = d * static_cast<float>(sc[s]);
    if (ds == 0.0f) continue;
    const float dm = dmin * static_cast<float>(mn[s]);
    for (int l = 0; l < kSub; ++l) {
      const int q = std::clamp(nearest((x[kSub * j + l] + dm) / ds), 0, kLevels);
      codes[static_cast<size_t>(kSub * j + l)] = static_cast<uint8_t>(q);
    }
  }
  // Each 32 bytes of qs hold two sub-blocks: the even one in the low nibbles.
  uint8_t* qs = out + 16;
  for (int pair = 0; pair < kSubBlocks / 2; ++pair)
    for (int l = 0; l < kSub; ++l)
      qs[kSub * pair + l] =
          static_cast<uint8_t>(codes[static_cast<size_t>(64 * pair + l)] |
                               (codes[static_cast<size_t>(64 * pair + 32 + l)] << 4));
}

void quantize_block(const float* x, uint8_t* out) {
  std::array<uint8_t, kQ4KBlockElems> codes{};
  std::array<SubBlockFit, kSubBlocks> fits{};
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < kSubBlocks; ++j) {
    const float* xs = x + kSub * j;
    float sum_x2 = 0;
    for (int l = 0; l < kSub; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / kSub);
    std::array<float, kSub> weights{};
    for (int l = 0; l < kSub; ++l) weights[static_cast<size_t>(l)] = rms + std::fabs(xs[l]);
    fits[static_cast<size_t>(j)] =
        fit_sub_block(xs, weights.data(), codes.data() + kSub * j, kReferenceGrid);
    max_scale = std::max(max_scale, fits[static_cast<size_t>(j)].scale);
    max_min = std::max(max_min, fits[static_cast<size_t>(j)].min);
  }
  // Second level: the sub-block scales and mins as 6-bit multiples of the f16 d and dmin.
  const float inv_scale = max_scale > 0 ? kScaleLevels / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? kScaleLevels / max_min : 0.0f;
  std::array<int, kSubBlocks> sc{}, mn{};
  for (int j = 0; j < kSubBlocks; ++j) {
    const auto s = static_cast<size_t>(j);
    sc[s] = std::min(kScaleLevels, nearest(inv_scale * fits[s].scale));
    mn[s] = std::min(kScaleLevels, nearest(inv_min * fits[s].min));
  }
  encode_block(x, sc, mn, max_scale / kScaleLevels, max_min / kScaleLevels, codes, out);
}

// The weighted fit of n non-negative values (the sub-block scales or mins) as multiples
// L ∈ [0, nmax] of one scale, as llama.cpp's make_qp_quants: the best of 9 candidate scales
// around max/nmax by weighted squared error, then up to 5 passes that move single multiples
// while that raises Σwxl²/Σwl² (i.e. lowers the weighted error of the least-squares scale).
// Returns the least-squares scale of the final multiples.
float fit_multiples(const float* v, const float* w, int nmax, std::array<int, kSubBlocks>& l) {
  constexpr int n = kSubBlocks;
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, v[i]);
  if (max < 1e-15f) {
    l.fill(0);
    return 0.0f;
  }
  float inv = static_cast<float>(nmax) / max;
  float best = 0;
  {
    const float scale = 1 / inv;
    for (int i = 0; i < n; ++i) {
      const float diff = v[i] - scale * static_cast<float>(nearest(inv * v[i]));
      best += w[i] * diff * diff;
    }
  }
  for (int step = -4; step <= 4; ++step) {
    if (step == 0) continue;
    const float inv_try = (0.1f * static_cast<float>(step) + static_cast<float>(nmax)) / max;
    const float scale_try = 1 / inv_try;
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const int q = std::min(nmax, nearest(inv_try * v[i]));
      const float diff = v[i] - scale_try * static_cast<float>(q);
      err += w[i] * diff * diff;
    }
    if (err < best) {
      best = err;
      inv = inv_try;
    }
  }
  float sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < n; ++i) {
    const auto s = static_cast<size_t>(i);
    l[s] = std::min(nmax, nearest(inv * v[i]));
    const float q = static_cast<float>(l[s]);
    sum_lx += w[i] * v[i] * q;
    sum_l2 += w[i] * q * q;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const auto s = static_cast<size_t>(i);
      const float q = static_cast<float>(l[s]);
      float slx = sum_lx - w[i] * v[i] * q;
      float sl2 = sum_l2 - w[i] * q * q;
      if (!(slx > 0 && sl2 > 0)) continue;
      // A tiny slx makes the target huge: cap it before the conversion to int.
      const float target = v[i] * sl2 / slx;
      const int q_new = target >= static_cast<float>(nmax) ? nmax : nearest(target);
      if (q_new == l[s]) continue;
      const float qn = static_cast<float>(q_new);
      slx += w[i] * v[i] * qn;
      sl2 += w[i] * qn * qn;
      if (slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
        l[s] = q_new;
        sum_lx = slx;
        sum_l2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  return sum_l2 > 0 ? sum_lx / sum_l2 : 0.0f;
}

// llama.cpp's importance-weighted Q4_K (quantize_row_q4_K_impl): element weights
// qw·sqrt(σ² + x²) with σ² = 2·mean(x²) of the super-block, the finer sub-block search, and the
// second level fitted by weighted least squares (weights: each sub-block's total weight)
// instead of max/63.
void quantize_block_weighted(const float* x, const float* qw, uint8_t* out) {
  float sum_x2 = 0;
  for (int l = 0; l < kQ4KBlockElems; ++l) sum_x2 += x[l] * x[l];
  const float sigma2 = 2 * sum_x2 / kQ4KBlockElems;
  std::array<uint8_t, kQ4KBlockElems> codes{};
  std::array<float, kSubBlocks> scales{}, mins{}, sub_weight{};
  for (int j = 0; j < kSubBlocks; ++j) {
    const auto s = static_cast<size_t>(j);
    const float* xs = x + kSub * j;
    std::array<float, kSub> weights{};
    float sum_w = 0;
    for (int l = 0; l < kSub; ++l) {
      weights[static_cast<size_t>(l)] = qw[kSub * j + l] * std::sqrt(sigma2 + xs[l] * xs[l]);
      sum_w += weights[static_cast<size_t>(l)];
    }
    sub_weight[s] = sum_w;
    const SubBlockFit fit =
        fit_sub_block(xs, weights.data(), codes.data() + kSub * j, kWeightedGrid);
    scales[s] = fit.scale;
    mins[s] = fit.min;
  }
  std::array<int, kSubBlocks> sc{}, mn{};
  const float d = fit_multiples(scales.data(), sub_weight.data(), kScaleLevels, sc);
  const float dmin = fit_multiples(mins.data(), sub_weight.data(), kScaleLevels, mn);
  encode_block(x, sc, mn, d, dmin, codes, out);
}

}  // namespace

void quantize_row_q4_k(const float* src, uint8_t* dst, int64_t n_elements) {
  NIBBLE_CHECK(n_elements >= 0 && n_elements % kQ4KBlockElems == 0,
               "Q4_K: {} elements is not a whole number of 256-element super-blocks", n_elements);
  for (int64_t b = 0; b < n_elements / kQ4KBlockElems; ++b)
    quantize_block(src + b * kQ4KBlockElems, dst + b * kQ4KBlockBytes);
}

void quantize_block_q4_k_weighted(const float* x, const float* weights, uint8_t* dst) {
  quantize_block_weighted(x, weights, dst);
}

GgmlType kquant_row_type(GgmlType requested, int64_t row_elems) {
  if (requested == GgmlType::Q4_K && row_elems % kQ4KBlockElems != 0) return GgmlType::Q5_0;
  return requested;
}

}  // namespace nibble::gguf
