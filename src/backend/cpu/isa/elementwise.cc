// Row-wise kernels of the transformer block: RMSNorm, SwiGLU, residual add, bf16 rounding and
// attention of one query head over the paged KV cache.
#include "backend/cpu/isa/simd.h"
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {

void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  Vf acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kVL <= n; i += 2 * kVL) {
    const Vf a = vload(x + i), b = vload(x + i + kVL);
    acc0 = vfma(a, a, acc0);
    acc1 = vfma(b, b, acc1);
  }
  for (; i < n; i += kVL) {
    const Vf a = n - i >= kVL ? vload(x + i) : vload_n(x + i, n - i);
    acc0 = vfma(a, a, acc0);
  }
  const float mean = vsum(vadd(acc0, acc1)) / float(n);
  const Vf inv = vset1(1.0f / __builtin_sqrtf(mean + eps));
  for (i = 0; i + kVL <= n; i += kVL)
    vstore(out + i, vmul(vload(weight + i), vmul(vload(x + i), inv)));
  if (i < n) {
    const int64_t rest = n - i;
    vstore_n(out + i, vmul(vload_n(weight + i, rest), vmul(vload_n(x + i, rest), inv)), rest);
  }
}

namespace {
inline Vf silu_times(Vf g, Vf u) {
  const Vf sigmoid = vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vsub(vzero(), g))));
  return vmul(vmul(g, sigmoid), u);
}
}  // namespace

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + kVL <= n; i += kVL) vstore(out + i, silu_times(vload(gate + i), vload(up + i)));
  if (i < n) {
    const int64_t rest = n - i;
    vstore_n(out + i, silu_times(vload_n(gate + i, rest), vload_n(up + i, rest)), rest);
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kVL <= n; i += kVL) vstore(y + i, vadd(vload(y + i), vload(x + i)));
  if (i < n) vstore_n(y + i, vadd(vload_n(y + i, n - i), vload_n(x + i, n - i)), n - i);
}

void f32_to_bf16(const float* x, int64_t n, uint16_t* out, float* rounded) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    __builtin_memcpy(&u, x + i, 4);
    uint16_t b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      b = uint16_t((u >> 16) | 0x40u);  // keep NaN a quiet NaN
    } else {
      b = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    out[i] = b;
    if (rounded) {
      const uint32_t back = uint32_t(b) << 16;
      __builtin_memcpy(rounded + i, &back, 4);
    }
  }
}

namespace {

inline Vf dot_partial(const float* q, const float* k, int64_t d) {
  Vf acc = vzero();
  int64_t i = 0;
  for (; i + kVL <= d; i += kVL) acc = vfma(vload(q + i), vload(k + i), acc);
  if (i < d) acc = vfma(vload_n(q + i, d - i), vload_n(k + i, d - i), acc);
  return acc;
}

// The four horizontal sums of a0..a3 at once: three hadds instead of four full reductions.
inline __m128 vsum4(Vf a0, Vf a1, Vf a2, Vf a3) {
  const __m256 h01 = _mm256_hadd_ps(_mm256_add_ps(low_half(a0), high_half(a0)),
                                    _mm256_add_ps(low_half(a1), high_half(a1)));
  const __m256 h23 = _mm256_hadd_ps(_mm256_add_ps(low_half(a2), high_half(a2)),
                                    _mm256_add_ps(low_half(a3), high_half(a3)));
  const __m256 h = _mm256_hadd_ps(h01, h23);
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// out[i0 .. i0 + NV vectors) = sum_j p_j v_j[...]: NV independent accumulators so that the FMA
// chains over positions overlap; the last vector holds `last_lanes` lanes.
template <int NV>
void weighted_values(const AttentionArgs& a, int64_t i0, int64_t last_lanes, float inv_sum) {
  Vf acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = vzero();
  for (int64_t j0 = 0; j0 < a.n_ctx; j0 += a.block_size) {
    const int64_t slots = a.n_ctx - j0 < a.block_size ? a.n_ctx - j0 : a.block_size;
    const float* values = a.values + a.block_table[j0 / a.block_size] * a.block_stride + i0;
    for (int64_t s = 0; s < slots; ++s) {
      const Vf p = vset1(a.scores[j0 + s]);
      const float* row = values + s * a.head_dim;
      for (int v = 0; v + 1 < NV; ++v) acc[v] = vfma(p, vload(row + v * kVL), acc[v]);
      acc[NV - 1] = vfma(p, vload_n(row + (NV - 1) * kVL, last_lanes), acc[NV - 1]);
    }
  }
  const Vf scale = vset1(inv_sum);
  for (int v = 0; v + 1 < NV; ++v) vstore(a.out + i0 + v * kVL, vmul(acc[v], scale));
  vstore_n(a.out + i0 + (NV - 1) * kVL, vmul(acc[NV - 1], scale), last_lanes);
}

}  // namespace

void attention(const AttentionArgs& a) {
  const int64_t d = a.head_dim;
  float max_score = -__builtin_inff();
  // Scores block by block (the slots of one block are contiguous), four keys at a time.
  for (int64_t j0 = 0; j0 < a.n_ctx; j0 += a.block_size) {
    const int64_t slots = a.n_ctx - j0 < a.block_size ? a.n_ctx - j0 : a.block_size;
    const float* keys = a.keys + a.block_table[j0 / a.block_size] * a.block_stride;
    float* scores = a.scores + j0;
    int64_t s = 0;
    for (; s + 4 <= slots; s += 4) {
      const __m128 sums =
          vsum4(dot_partial(a.q, keys + s * d, d), dot_partial(a.q, keys + (s + 1) * d, d),
                dot_partial(a.q, keys + (s + 2) * d, d), dot_partial(a.q, keys + (s + 3) * d, d));
      _mm_storeu_ps(scores + s, _mm_mul_ps(sums, _mm_set1_ps(a.scale)));
    }
    for (; s < slots; ++s) scores[s] = vsum(dot_partial(a.q, keys + s * d, d)) * a.scale;
    for (s = 0; s < slots; ++s) max_score = scores[s] > max_score ? scores[s] : max_score;
  }
  const Vf vmax_score = vset1(max_score);
  Vf vsum_p = vzero();
  int64_t j = 0;
  for (; j + kVL <= a.n_ctx; j += kVL) {
    const Vf p = vexp(vsub(vload(a.scores + j), vmax_score));
    vstore(a.scores + j, p);
    vsum_p = vadd(vsum_p, p);
  }
  if (j < a.n_ctx) {
    const int64_t rest = a.n_ctx - j;
    // Masked-off lanes load 0 and would give exp(-max) != 0: mask them out of the sum too.
    const Vf p = vexp(vsub(vload_n(a.scores + j, rest), vmax_score));
    vstore_n(a.scores + j, p, rest);
    vsum_p = vadd(vsum_p, vload_n(a.scores + j, rest));
  }
  const float inv_sum = 1.0f / vsum(vsum_p);

  constexpr int64_t kMaxVectors = 8;
  for (int64_t i0 = 0; i0 < d; i0 += kMaxVectors * kVL) {
    const int64_t remaining = d - i0;
    const int64_t vectors =
        remaining >= kMaxVectors * kVL ? kMaxVectors : (remaining + kVL - 1) / kVL;
    const int64_t last_lanes =
        remaining - (vectors - 1) * kVL < kVL ? remaining - (vectors - 1) * kVL : kVL;
    switch (vectors) {
      case 1: weighted_values<1>(a, i0, last_lanes, inv_sum); break;
      case 2: weighted_values<2>(a, i0, last_lanes, inv_sum); break;
      case 3: weighted_values<3>(a, i0, last_lanes, inv_sum); break;
      case 4: weighted_values<4>(a, i0, last_lanes, inv_sum); break;
      case 5: weighted_values<5>(a, i0, last_lanes, inv_sum); break;
      case 6: weighted_values<6>(a, i0, last_lanes, inv_sum); break;
      case 7: weighted_values<7>(a, i0, last_lanes, inv_sum); break;
      default: weighted_values<8>(a, i0, last_lanes, inv_sum); break;
    }
  }
}

}  // namespace nibble::cpu::NIBBLE_ISA
