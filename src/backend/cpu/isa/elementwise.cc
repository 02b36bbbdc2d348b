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

void attention(const AttentionArgs& a) {
  const int64_t d = a.head_dim;
  float max_score = -__builtin_inff();
  // Scores block by block: the slots of one block are contiguous.
  for (int64_t j0 = 0; j0 < a.n_ctx; j0 += a.block_size) {
    const int64_t slots = a.n_ctx - j0 < a.block_size ? a.n_ctx - j0 : a.block_size;
    const float* keys = a.keys + a.block_table[j0 / a.block_size] * a.block_stride;
    for (int64_t s = 0; s < slots; ++s) {
      const float* k = keys + s * d;
      Vf acc = vzero();
      int64_t i = 0;
      for (; i + kVL <= d; i += kVL) acc = vfma(vload(a.q + i), vload(k + i), acc);
      if (i < d) acc = vfma(vload_n(a.q + i, d - i), vload_n(k + i, d - i), acc);
      const float score = vsum(acc) * a.scale;
      a.scores[j0 + s] = score;
      max_score = score > max_score ? score : max_score;
    }
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

  for (int64_t i = 0; i < d; i += kVL) {
    const int64_t lanes = d - i < kVL ? d - i : kVL;
    Vf acc = vzero();
    for (int64_t j0 = 0; j0 < a.n_ctx; j0 += a.block_size) {
      const int64_t slots = a.n_ctx - j0 < a.block_size ? a.n_ctx - j0 : a.block_size;
      const float* values = a.values + a.block_table[j0 / a.block_size] * a.block_stride + i;
      if (lanes == kVL) {
        for (int64_t s = 0; s < slots; ++s)
          acc = vfma(vset1(a.scores[j0 + s]), vload(values + s * d), acc);
      } else {
        for (int64_t s = 0; s < slots; ++s) {
          acc = vfma(vset1(a.scores[j0 + s]), vload_n(values + s * d, lanes), acc);
        }
      }
    }
    acc = vmul(acc, vset1(inv_sum));
    if (lanes == kVL) {
      vstore(a.out + i, acc);
    } else {
      vstore_n(a.out + i, acc, lanes);
    }
  }
}

}  // namespace nibble::cpu::NIBBLE_ISA
