#pragma once
// A thin vector layer so that one kernel source serves AVX2 (8 lanes) and AVX-512 (16 lanes).
// Everything is in an anonymous namespace: each ISA object keeps private copies, so the linker
// can never pick an AVX-512 body for code that runs on an AVX2 machine.
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wuninitialized at every
// use site (GCC bug 105593); the warning is about the headers, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

namespace nibble::cpu::NIBBLE_ISA {
namespace {

#if defined(NIBBLE_ISA_avx512)
using Vf = __m512;
constexpr int64_t kVL = 16;
inline Vf vzero() { return _mm512_setzero_ps(); }
inline Vf vset1(float v) { return _mm512_set1_ps(v); }
inline Vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vf v) { _mm512_storeu_ps(p, v); }
inline __mmask16 tail_mask(int64_t n) { return __mmask16((1u << n) - 1u); }
inline Vf vload_n(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
inline void vstore_n(float* p, Vf v, int64_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
inline Vf vfma(Vf a, Vf b, Vf c) { return _mm512_fmadd_ps(a, b, c); }
inline Vf vadd(Vf a, Vf b) { return _mm512_add_ps(a, b); }
inline Vf vsub(Vf a, Vf b) { return _mm512_sub_ps(a, b); }
inline Vf vmul(Vf a, Vf b) { return _mm512_mul_ps(a, b); }
inline Vf vdiv(Vf a, Vf b) { return _mm512_div_ps(a, b); }
inline Vf vmax(Vf a, Vf b) { return _mm512_max_ps(a, b); }
inline Vf vmin(Vf a, Vf b) { return _mm512_min_ps(a, b); }
inline Vf vround(Vf a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// 2^n for integral-valued n in the normal range.
inline Vf vpow2i(Vf n) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline Vf vzero_below(Vf v, Vf x, float limit) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(limit), _CMP_GE_OQ), v);
}
inline __m256 low_half(Vf v) { return _mm512_castps512_ps256(v); }
inline __m256 high_half(Vf v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}
// Widens 16 bf16 numbers to f32 (exact: bf16 is the top half of an f32).
inline Vf vload_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
#else
using Vf = __m256;
constexpr int64_t kVL = 8;
inline Vf vzero() { return _mm256_setzero_ps(); }
inline Vf vset1(float v) { return _mm256_set1_ps(v); }
inline Vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vf v) { _mm256_storeu_ps(p, v); }
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vf vload_n(const float* p, int64_t n) { return _mm256_maskload_ps(p, tail_mask(n)); }
inline void vstore_n(float* p, Vf v, int64_t n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
inline Vf vfma(Vf a, Vf b, Vf c) { return _mm256_fmadd_ps(a, b, c); }
inline Vf vadd(Vf a, Vf b) { return _mm256_add_ps(a, b); }
inline Vf vsub(Vf a, Vf b) { return _mm256_sub_ps(a, b); }
inline Vf vmul(Vf a, Vf b) { return _mm256_mul_ps(a, b); }
inline Vf vdiv(Vf a, Vf b) { return _mm256_div_ps(a, b); }
inline Vf vmax(Vf a, Vf b) { return _mm256_max_ps(a, b); }
inline Vf vmin(Vf a, Vf b) { return _mm256_min_ps(a, b); }
inline Vf vround(Vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vf vpow2i(Vf n) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vf vzero_below(Vf v, Vf x, float limit) {
  return _mm256_and_ps(v, _mm256_cmp_ps(x, _mm256_set1_ps(limit), _CMP_GE_OQ));
}
inline __m256 low_half(Vf v) { return v; }
inline __m256 high_half(Vf) { return _mm256_setzero_ps(); }
inline Vf vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
#endif

// Horizontal sum with a fixed order, so that a given output is reduced the same way whatever
// tile shape produced it (batch-invariant results).
inline float vsum(Vf v) {
  __m256 s = _mm256_add_ps(low_half(v), high_half(v));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

inline float vmax_lanes(Vf v) {
  alignas(64) float lanes[kVL];
  vstore(lanes, v);
  float m = lanes[0];
  for (int64_t i = 1; i < kVL; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

// exp(x) in f32 to about 2 ulp (Cephes polynomial after range reduction by ln 2); inputs below
// -87.3 give 0, inputs above 88.3 are clamped.
inline Vf vexp(Vf x) {
  const Vf xc = vmin(vmax(x, vset1(-87.3f)), vset1(88.3f));
  const Vf n = vround(vmul(xc, vset1(1.44269504088896341f)));
  Vf r = vfma(n, vset1(-0.693359375f), xc);
  r = vfma(n, vset1(2.12194440e-4f), r);
  Vf p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  const Vf e = vadd(vfma(vmul(p, r), r, r), vset1(1.0f));
  return vzero_below(vmul(e, vpow2i(n)), x, -87.3f);
}

}  // namespace
}  // namespace nibble::cpu::NIBBLE_ISA
