// a8 matmul of Q8_0-style weights: signed 8-bit codes in groups of 32 (one scale per group, no
// mins) against int8 activations, scaled per group of 32 (llama.cpp's Q8_0 x Q8_0, nibble's
// --cpu-int8-activations) or per row.
//
// Why a tile of its own: with one group per 32-byte chunk, the generic a8 tile
// (quant_matmul.cc) pays its per-group flush on every chunk: a scalar f16 scale conversion and
// broadcast per output, an activation-scale load per row, an integer accumulator to clear and
// add. Here eight groups' weight and activation scales are loaded (and converted) as vectors
// and multiplied once, a permute picks each group's product, and every chunk's 8-bit dot
// product goes straight into the f32 accumulator. The sums are exact integers per group either way,
// so results equal the generic tile's up to the order of f32 additions.
#include "backend/cpu/isa/quant_tiles.h"
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {
namespace {

// Parameters i .. i + n - 1 (n ≤ 8; f16 or f32) as f32, zeros past n.
inline __m256 load_params8(const void* p, bool f16, int64_t i, int n) {
  if (n == 8) {
    if (f16) {
      return _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
    }
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  }
  alignas(32) float v[8] = {};
  for (int l = 0; l < n; ++l) {
    v[l] = f16 ? _cvtsh_ss(static_cast<const uint16_t*>(p)[i + l])
               : static_cast<const float*>(p)[i + l];
  }
  return _mm256_load_ps(v);
}

inline __m256 load_f32x8(const float* p, int n) {
  if (n == 8) return _mm256_loadu_ps(p);
  alignas(32) float v[8] = {};
  for (int l = 0; l < n; ++l) v[l] = p[l];
  return _mm256_load_ps(v);
}

template <int MR, int NR>
void a8_tile_s8_g32(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  const int64_t groups = a.k / 32;
  const int8_t* xq = a.xq + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < groups; g0 += 8) {
    const int gn = groups - g0 < 8 ? int(groups - g0) : 8;
    __m256 scale[MR][NR];  // d_g · s_g of groups g0 .. g0 + gn - 1, multiplied once
    for (int i = 0; i < MR; ++i) {
      const __m256 xs = a.x_group_scale
                            ? load_f32x8(a.x_group_scale + (m + i) * a.n_groups + g0, gn)
                            : _mm256_set1_ps(1.0f);
      for (int j = 0; j < NR; ++j) {
        scale[i][j] =
            _mm256_mul_ps(load_params8(a.scales, a.params_f16, (n + j) * a.n_groups + g0, gn), xs);
      }
    }
    for (int gi = 0; gi < gn; ++gi) {
      const int64_t c = g0 + gi;
      const __m256i pick = _mm256_set1_epi32(gi);
      __m256i xv[MR];
      for (int i = 0; i < MR; ++i) {
        xv[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + c * 32));
      }
      for (int j = 0; j < NR; ++j) {
        prefetch_next_tile<32, NR>(codes, a.code_row_bytes, c, j);
        const __m256i w = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(codes + j * a.code_row_bytes + c * 32));
        const __m256i w_abs = _mm256_abs_epi8(w);
        for (int i = 0; i < MR; ++i) {
          const __m256i p = dot_u8s8(_mm256_setzero_si256(), w_abs, _mm256_sign_epi8(xv[i], w));
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                      _mm256_permutevar8x32_ps(scale[i][j], pick), acc[i][j]);
        }
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum256(acc[i][j]);
      if (!a.x_group_scale) s *= a.x_scale[m + i];
      if (a.bias) s += a.bias[n + j];
      a.y[(m + i) * a.ldy + n + j] = s;
    }
  }
}

}  // namespace

void quant_matmul_a8_s8_g32(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const Tiles t{a8_tile_s8_g32<1, kGemvRows>, a8_tile_s8_g32<1, 1>, a8_tile_s8_g32<kTileM, kTileN>,
                a8_tile_s8_g32<kTileM, 1>, a8_tile_s8_g32<1, kTileN>};
  run_tiles(t, a, n_begin, n_end);
}

}  // namespace nibble::cpu::NIBBLE_ISA
