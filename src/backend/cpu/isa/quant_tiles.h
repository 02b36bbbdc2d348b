#pragma once
// What the quantized-matmul ISA files share (quant_matmul.cc, quant_matmul_s8.cc): the 8-bit dot
// product, the horizontal sum, the next-tile prefetch and the tile drivers. In an anonymous
// namespace inside the ISA's namespace, as simd.h: every ISA object keeps private copies.
#include <immintrin.h>

#include <cstdint>

#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {

// Q8_0-style weights (signed 8-bit codes, groups of 32, no mins) against int8 activations:
// quant_matmul_s8.cc.
void quant_matmul_a8_s8_g32(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end);

namespace {

// acc + sum over groups of 4 bytes of u8(a) * s8(b), into 8 s32 lanes.
inline __m256i dot_u8s8(__m256i acc, __m256i a, __m256i b) {
#if defined(NIBBLE_ISA_avx512)
  return _mm256_dpbusd_epi32(acc, a, b);
#else
  // |w| <= 128 and |x| <= 127, so a pair of products never saturates the s16 sum.
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
#endif
}

inline float hsum256(__m256 s) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

#if defined(NIBBLE_ISA_avx512)
constexpr bool kVnni = true;  // vpdpbusd on 256-bit vectors (AVX-512 VNNI + VL)
#else
constexpr bool kVnni = false;
#endif

// The next tile's rows follow this tile's in memory; at K = 2048 a 1 x 4 decode tile is exactly
// one 4 KiB page, and the hardware prefetchers do not cross pages, so every tile would start
// with a full DRAM miss on each row. One software prefetch per 64 code bytes consumed, of the
// same position one tile ahead, keeps the stream a tile (NR rows) in front of the loads.
template <int64_t kBytes, int NR>
inline void prefetch_next_tile(const uint8_t* codes, int64_t row_bytes, int64_t c, int j) {
  if ((c * kBytes) % 64 == 0)
    _mm_prefetch(reinterpret_cast<const char*>(codes + (NR + j) * row_bytes + c * kBytes),
                 _MM_HINT_T0);
}

// ---- tile drivers ----

using TileFn = void (*)(const QuantMatmulArgs& a, int64_t m, int64_t n);

struct Tiles {
  TileFn gemv_wide;  // 1 x kGemvRows
  TileFn gemv_one;   // 1 x 1
  TileFn full;       // kTileM x kTileN
  TileFn rows_one;   // kTileM x 1
  TileFn tail;       // 1 x kTileN
};

constexpr int kGemvRows = 4;
constexpr int kTileM = 2;
constexpr int kTileN = 2;

inline void run_tiles(const Tiles& t, const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  if (a.m_rows == 1) {
    int64_t n = n_begin;
    for (; n + kGemvRows <= n_end; n += kGemvRows) t.gemv_wide(a, 0, n);
    for (; n < n_end; ++n) t.gemv_one(a, 0, n);
    return;
  }
  int64_t n = n_begin;
  for (; n + kTileN <= n_end; n += kTileN) {
    int64_t m = 0;
    for (; m + kTileM <= a.m_rows; m += kTileM) t.full(a, m, n);
    for (; m < a.m_rows; ++m) t.tail(a, m, n);
  }
  for (; n < n_end; ++n) {
    int64_t m = 0;
    for (; m + kTileM <= a.m_rows; m += kTileM) t.rows_one(a, m, n);
    for (; m < a.m_rows; ++m) t.gemv_one(a, m, n);
  }
}

}  // namespace
}  // namespace nibble::cpu::NIBBLE_ISA
