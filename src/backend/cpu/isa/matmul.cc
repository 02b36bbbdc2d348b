// Dense matmul kernels y = x·Wᵀ with W row-major [N, K]. Each output is one vector accumulator
// running over K followed by a fixed horizontal sum, whatever tile computes it: results do not
// depend on how many rows are in the batch (decode, prefill and chunked prefill agree bit for
// bit). Tiles of kMR rows of x by kNR rows of W keep all accumulators in registers and reuse
// each loaded vector kNR (or kMR) times, which makes prefill compute-bound.
#include "backend/cpu/isa/simd.h"
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {
namespace {

constexpr int kMR = 4;
#if defined(NIBBLE_ISA_avx512)
constexpr int kNR = 6;  // 24 accumulators + 6 weight vectors + 1 activation of 32 zmm
#else
constexpr int kNR = 3;  // 12 accumulators + 3 weight vectors + 1 activation of 16 ymm
#endif
constexpr int kGemvNR = 8;  // more independent weight streams for the memory-bound M=1 case

using TileFn = void (*)(const MatmulArgs& a, int64_t m, int64_t n);

template <int MR, int NR>
void store_tile(const MatmulArgs& a, int64_t m, int64_t n, Vf (&acc)[MR][NR]) {
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = vsum(acc[i][j]);
      if (a.bias) s += a.bias[n + j];
      a.y[(m + i) * a.ldy + n + j] = s;
    }
  }
}

template <int MR, int NR>
void tile_f32(const MatmulArgs& a, int64_t m, int64_t n) {
  const float* x = a.x + m * a.ldx;
  const float* w = static_cast<const float*>(a.w) + n * a.ldw;
  Vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  int64_t k = 0;
  for (; k + kVL <= a.k; k += kVL) {
    Vf wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = vload(w + j * a.ldw + k);
    for (int i = 0; i < MR; ++i) {
      const Vf xv = vload(x + i * a.ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  if (k < a.k) {
    const int64_t rest = a.k - k;
    Vf wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = vload_n(w + j * a.ldw + k, rest);
    for (int i = 0; i < MR; ++i) {
      const Vf xv = vload_n(x + i * a.ldx + k, rest);
      for (int j = 0; j < NR; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  store_tile<MR, NR>(a, m, n, acc);
}

#if defined(NIBBLE_ISA_avx512)
// vdpbf16ps: each f32 lane accumulates the products of one adjacent pair of bf16 numbers
// (exact products, f32 sums), 32 bf16 per instruction.
inline __m512bh load_bh(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
inline __m512bh load_bh_n(const uint16_t* p, int64_t n) {
  return (__m512bh)_mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << n) - 1u), p);
}

template <int MR, int NR>
void tile_bf16(const MatmulArgs& a, int64_t m, int64_t n) {
  const uint16_t* x = a.x_bf16 + m * a.ldx;
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + n * a.ldw;
  Vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  int64_t k = 0;
  for (; k + 32 <= a.k; k += 32) {
    __m512bh wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_bh(w + j * a.ldw + k);
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = load_bh(x + i * a.ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  if (k < a.k) {
    const int64_t rest = a.k - k;
    __m512bh wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_bh_n(w + j * a.ldw + k, rest);
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = load_bh_n(x + i * a.ldx + k, rest);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  store_tile<MR, NR>(a, m, n, acc);
}
#else
// No bf16 dot product on AVX2. A bf16 number is the top half of an f32, so 16 packed bf16
// numbers become two f32 vectors with one AND (odd elements) and one shift (even elements);
// doing the same to the bf16 activations pairs them up correctly. Two cheap integer ops per 16
// weights instead of a widening load per 8 keeps the memory-bound decode GEMV streaming.
inline void split_bf16(__m256i packed, Vf& even, Vf& odd) {
  even = _mm256_castsi256_ps(_mm256_slli_epi32(packed, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(packed, _mm256_set1_epi32(int(0xffff0000u))));
}
inline __m256i load_packed(const uint16_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline __m256i load_packed_n(const uint16_t* p, int64_t n) {
  alignas(32) uint16_t padded[16] = {};
  for (int64_t e = 0; e < n; ++e) padded[e] = p[e];
  return load_packed(padded);
}

template <int MR, int NR>
void tile_bf16(const MatmulArgs& a, int64_t m, int64_t n) {
  const uint16_t* x = a.x_bf16 + m * a.ldx;
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + n * a.ldw;
  Vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  auto step = [&](auto load_w, auto load_x) {
    Vf xe[MR], xo[MR];
    for (int i = 0; i < MR; ++i) split_bf16(load_x(x + i * a.ldx), xe[i], xo[i]);
    for (int j = 0; j < NR; ++j) {
      Vf we, wo;
      split_bf16(load_w(w + j * a.ldw), we, wo);
      for (int i = 0; i < MR; ++i) acc[i][j] = vfma(xo[i], wo, vfma(xe[i], we, acc[i][j]));
    }
  };
  int64_t k = 0;
  for (; k + 16 <= a.k; k += 16) {
    step([k](const uint16_t* p) { return load_packed(p + k); },
         [k](const uint16_t* p) { return load_packed(p + k); });
  }
  if (k < a.k) {
    const int64_t rest = a.k - k;
    step([k, rest](const uint16_t* p) { return load_packed_n(p + k, rest); },
         [k, rest](const uint16_t* p) { return load_packed_n(p + k, rest); });
  }
  store_tile<MR, NR>(a, m, n, acc);
}
#endif

template <bool kBf16, int MR, int NR>
constexpr TileFn tile_fn() {
  if constexpr (kBf16) {
    return tile_bf16<MR, NR>;
  } else {
    return tile_f32<MR, NR>;
  }
}

template <bool kBf16, int MR>
TileFn pick_nr(int64_t nr) {
  switch (nr) {
    case 1: return tile_fn<kBf16, MR, 1>();
    case 2: return tile_fn<kBf16, MR, 2>();
    case 3: return tile_fn<kBf16, MR, 3>();
    case 4: return tile_fn<kBf16, MR, 4>();
    case 5: return tile_fn<kBf16, MR, 5>();
    case 6: return tile_fn<kBf16, MR, 6>();
    case 7: return tile_fn<kBf16, MR, 7>();
    default: return tile_fn<kBf16, MR, 8>();
  }
}

template <bool kBf16>
TileFn pick_tile(int64_t mr, int64_t nr) {
  switch (mr) {
    case 1: return pick_nr<kBf16, 1>(nr);
    case 2: return pick_nr<kBf16, 2>(nr);
    case 3: return pick_nr<kBf16, 3>(nr);
    default: return pick_nr<kBf16, 4>(nr);
  }
}

template <bool kBf16>
void matmul(const MatmulArgs& a, int64_t n_begin, int64_t n_end) {
  if (a.m_rows == 1) {
    const TileFn full = pick_tile<kBf16>(1, kGemvNR);
    int64_t n = n_begin;
    for (; n + kGemvNR <= n_end; n += kGemvNR) full(a, 0, n);
    if (n < n_end) pick_tile<kBf16>(1, n_end - n)(a, 0, n);
    return;
  }
  // Rows of x per pass over the weight slice: keep them in L2 (about 256 KiB of activations)
  // while each kNR-row weight panel sits in L1 and is reused for all of them.
  const int64_t bytes_per_row = a.k * (kBf16 ? 2 : 4);
  int64_t rows_per_pass =
      (int64_t(256) * 1024 / (bytes_per_row > 0 ? bytes_per_row : 1)) / kMR * kMR;
  if (rows_per_pass < kMR) rows_per_pass = kMR;
  const TileFn full = pick_tile<kBf16>(kMR, kNR);
  for (int64_t m0 = 0; m0 < a.m_rows; m0 += rows_per_pass) {
    const int64_t m1 = m0 + rows_per_pass < a.m_rows ? m0 + rows_per_pass : a.m_rows;
    for (int64_t n = n_begin; n < n_end; n += kNR) {
      const int64_t nr = n_end - n < kNR ? n_end - n : kNR;
      const TileFn fn = nr == kNR ? full : pick_tile<kBf16>(kMR, nr);
      int64_t m = m0;
      for (; m + kMR <= m1; m += kMR) fn(a, m, n);
      if (m < m1) pick_tile<kBf16>(m1 - m, nr)(a, m, n);
    }
  }
}

}  // namespace

void matmul_f32(const MatmulArgs& a, int64_t n_begin, int64_t n_end) {
  matmul<false>(a, n_begin, n_end);
}
void matmul_bf16(const MatmulArgs& a, int64_t n_begin, int64_t n_end) {
  matmul<true>(a, n_begin, n_end);
}

}  // namespace nibble::cpu::NIBBLE_ISA
