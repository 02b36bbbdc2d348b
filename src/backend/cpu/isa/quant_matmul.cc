// Quantized linear kernels (kernel_table.h, QuantMatmulArgs), compiled once per ISA.
//  - a16: the weights are decoded in registers (nibble / byte -> f32, e4m3 / e5m2 through the
//    f16 converter, NF4 / e2m1 through a register table) and scaled per group, then multiplied
//    into f32 activations with FMA.
//  - a8: int8 activations against integer codes with 8-bit dot products: maddubs (u8 x s8,
//    pairs summed in saturating s16) + madd on AVX2, vpdpbusd (straight into s32) with
//    AVX-512 VNNI. Signed weights use the sign trick (|w| as the unsigned operand, the sign of
//    w moved onto x); x is clamped to [-127, 127] so that moving the sign never overflows.
//    Dot products accumulate exactly in s32 over a group and are scaled once per group.
// Each output is one accumulator chain over K followed by a fixed horizontal sum, whatever
// the tile, so results do not depend on the batch size.
#include "backend/cpu/isa/quant_tiles.h"
#include "backend/cpu/isa/simd.h"
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {
namespace {

// bitsandbytes' NF4 table, as quant::kNf4Values (quant/types.h) holds it: a copy, because ISA
// files include nothing that could emit shared inline code (see kernel_table.h).
constexpr float kNf4[16] = {-1.0f,
                            -0.6961928009986877f,
                            -0.5250730514526367f,
                            -0.39491748809814453f,
                            -0.28444138169288635f,
                            -0.18477343022823334f,
                            -0.09105003625154495f,
                            0.0f,
                            0.07958029955625534f,
                            0.16093020141124725f,
                            0.24611230194568634f,
                            0.33791524171829224f,
                            0.44070982933044434f,
                            0.5626170039176941f,
                            0.7229568362236023f,
                            1.0f};

constexpr int kSub = int(32 / kVL);  // f32 vectors per 32-element chunk
constexpr int kHalf = kSub / 2;      // vectors per 16 elements (a 16-element group)

inline float load_param(const void* p, bool f16, int64_t i) {
  if (f16) return _cvtsh_ss(static_cast<const uint16_t*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

constexpr bool is_4bit(QuantCodes e) {
  return e == QuantCodes::U4Sym || e == QuantCodes::U4 || e == QuantCodes::Nf4 ||
         e == QuantCodes::Fp4E2M1;
}
constexpr int64_t chunk_bytes(QuantCodes e) { return is_4bit(e) ? 16 : 32; }
// e4m3 codes are decoded in three integer operations into the f32 number with the same sign,
// exponent and mantissa bits moved into place (sign-extend to 32 bits, shift left by 20, keep
// bit 31 and bits 20-26): that is value * 2^-120, exactly, subnormals included (f32 bias 127
// vs e4m3 bias 7). Products with x at that scale would sit near f32's subnormal range, so the
// activations are multiplied by 2^64 first (exact) and the remaining 2^56 goes into the scale.
constexpr float kE4m3XScale = 18446744073709551616.0f;  // 2^64
constexpr float value_scale(QuantCodes e) {
  return e == QuantCodes::Fp8E4M3 ? 72057594037927936.0f : 1.0f;  // 2^56
}
template <QuantCodes E>
inline Vf load_x(const float* p) {
  if constexpr (E == QuantCodes::Fp8E4M3) return vmul(vload(p), vset1(kE4m3XScale));
  return vload(p);
}

// ---- a16: decode one 32-element chunk into kSub f32 vectors in element order ----

#if defined(NIBBLE_ISA_avx512)
inline Vf table16(const float* table, __m512i idx) {
  return _mm512_permutexvar_ps(idx, _mm512_loadu_ps(table));
}
inline Vf fp8_e4m3_to_vf(__m128i bytes16) {
  const __m512i bits = _mm512_and_si512(_mm512_slli_epi32(_mm512_cvtepi8_epi32(bytes16), 20),
                                        _mm512_set1_epi32(int(0x87F00000u)));
  return _mm512_castsi512_ps(bits);
}
inline Vf fp8_e5m2_to_vf(__m128i bytes16) {
  return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(bytes16), 8));
}
inline __m128i load16(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
inline Vf nibble_values(QuantCodes e, __m512i idx) {
  static constexpr float kFp4[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  if (e == QuantCodes::Nf4) return table16(kNf4, idx);
  if (e == QuantCodes::Fp4E2M1) return table16(kFp4, idx);
  return _mm512_cvtepi32_ps(idx);
}

// 4-bit kinds decode to the raw nibble for U4Sym (the - 8 is applied per group by the caller).
template <QuantCodes E>
inline void decode_values(const uint8_t* c, Vf (&v)[kSub]) {
  if constexpr (is_4bit(E)) {
    // One widening gives both halves: the low nibbles are elements 0-15, the high 16-31.
    const __m512i wide = _mm512_cvtepu8_epi32(load16(c));
    v[0] = nibble_values(E, _mm512_and_si512(wide, _mm512_set1_epi32(0xF)));
    v[1] = nibble_values(E, _mm512_srli_epi32(wide, 4));
  } else {
    for (int q = 0; q < 2; ++q) {
      if constexpr (E == QuantCodes::S8) {
        v[q] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(c + 16 * q)));
      } else if constexpr (E == QuantCodes::Fp8E4M3) {
        v[q] = fp8_e4m3_to_vf(load16(c + 16 * q));
      } else {
        v[q] = fp8_e5m2_to_vf(load16(c + 16 * q));
      }
    }
  }
}
#else
// Entries 0-7 and 8-15 in two registers; bit 3 of the index (moved to the sign bit) picks one.
inline Vf table16(const float* table, __m256i idx) {
  const Vf lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), idx);
  const Vf hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), idx);
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
inline Vf fp8_e4m3_to_vf(__m128i bytes8) {
  const __m256i bits = _mm256_and_si256(_mm256_slli_epi32(_mm256_cvtepi8_epi32(bytes8), 20),
                                        _mm256_set1_epi32(int(0x87F00000u)));
  return _mm256_castsi256_ps(bits);
}
inline Vf fp8_e5m2_to_vf(__m128i bytes8) {
  return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(bytes8), 8));
}
inline __m128i load8(const uint8_t* p) {
  return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
}
inline Vf nibble_values(QuantCodes e, __m256i idx) {
  static constexpr float kFp4[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  if (e == QuantCodes::Nf4) return table16(kNf4, idx);
  if (e == QuantCodes::Fp4E2M1) return table16(kFp4, idx);
  return _mm256_cvtepi32_ps(idx);
}

template <QuantCodes E>
inline void decode_values(const uint8_t* c, Vf (&v)[kSub]) {
  if constexpr (is_4bit(E)) {
    // Each widening of 8 bytes gives 8 low nibbles (elements j) and 8 high ones (j + 16):
    // two shuffles per 32 weights instead of four.
    for (int p = 0; p < 2; ++p) {
      const __m256i wide = _mm256_cvtepu8_epi32(load8(c + 8 * p));
      v[p] = nibble_values(E, _mm256_and_si256(wide, _mm256_set1_epi32(0xF)));
      v[2 + p] = nibble_values(E, _mm256_srli_epi32(wide, 4));
    }
  } else {
    for (int q = 0; q < 4; ++q) {
      if constexpr (E == QuantCodes::S8) {
        v[q] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(c + 8 * q)));
      } else if constexpr (E == QuantCodes::Fp8E4M3) {
        v[q] = fp8_e4m3_to_vf(load8(c + 8 * q));
      } else {
        v[q] = fp8_e5m2_to_vf(load8(c + 8 * q));
      }
    }
  }
}
#endif

// 16-element groups (Q2_K, Q3_K, Q6_K, NVFP4): the two halves of a chunk have their own scale,
// so each decoded vector is scaled before the FMA.
template <QuantCodes E, bool kMin, int MR, int NR>
void a16_tile_g16(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  constexpr int64_t kBytes = chunk_bytes(E);
  const int64_t chunks = a.k / 32;
  const float* x = a.x + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  Vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  for (int64_t c = 0; c < chunks; ++c) {
    for (int j = 0; j < NR; ++j) {
      const int64_t base = (n + j) * a.n_groups + 2 * c;
      float d[2], mn[2] = {0.0f, 0.0f};
      for (int h = 0; h < 2; ++h) {
        d[h] = load_param(a.scales, a.params_f16, base + h) * value_scale(E);
        if constexpr (kMin) mn[h] = load_param(a.mins, a.params_f16, base + h);
        if constexpr (E == QuantCodes::U4Sym) mn[h] -= 8.0f * d[h];
      }
      prefetch_next_tile<kBytes, NR>(codes, a.code_row_bytes, c, j);
      Vf v[kSub];
      decode_values<E>(codes + j * a.code_row_bytes + c * kBytes, v);
      // Here the scale is applied to each decoded vector (a min may follow), so e4m3's 2^64
      // goes on the values, not on x.
      if constexpr (E == QuantCodes::Fp8E4M3)
        for (int q = 0; q < kSub; ++q) v[q] = vmul(v[q], vset1(kE4m3XScale));
      for (int q = 0; q < kSub; ++q) {
        const int h = q / kHalf;
        const Vf w = (kMin || E == QuantCodes::U4Sym) ? vfma(v[q], vset1(d[h]), vset1(mn[h]))
                                                      : vmul(v[q], vset1(d[h]));
        for (int i = 0; i < MR; ++i)
          acc[i][j] = vfma(vload(x + i * a.ldx + c * 32 + q * kVL), w, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = vsum(acc[i][j]);
      if (a.bias) s += a.bias[n + j];
      a.y[(m + i) * a.ldy + n + j] = s;
    }
  }
}

#if defined(NIBBLE_ISA_avx512)
inline Vf load_params(const void* p, bool f16, int64_t i) {
  if (f16)
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  return _mm512_loadu_ps(static_cast<const float*>(p) + i);
}
#else
inline Vf load_params(const void* p, bool f16, int64_t i) {
  if (f16)
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}
#endif

// Per-group sums of the activations: f32 for a16 (x), s32 for a8 (xq), widened to f32 lanes.
inline Vf load_sums(const float* p) { return vload(p); }
#if defined(NIBBLE_ISA_avx512)
inline Vf load_sums(const int32_t* p) { return _mm512_cvtepi32_ps(_mm512_loadu_si512(p)); }
#else
inline Vf load_sums(const int32_t* p) {
  return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

// sum_g params[row, g] * xg[g]: the per-group min terms of one output as one vector dot product
// after the main loop (per-group scalar work costs as much as the decode at G = 32).
template <typename Sum>
inline float group_dot(const void* params, bool f16, int64_t row_offset, const Sum* xg,
                       int64_t n_groups) {
  Vf s = vzero();
  int64_t g = 0;
  for (; g + kVL <= n_groups; g += kVL)
    s = vfma(load_params(params, f16, row_offset + g), load_sums(xg + g), s);
  float total = vsum(s);
  for (; g < n_groups; ++g) total += load_param(params, f16, row_offset + g) * float(xg[g]);
  return total;
}

// The min terms of output (m, n): sum_g mn_g * xsum_g with mn_g = mins_g - 8 d_g for U4Sym, over
// the group sums of x (a16) or of xq (a8).
template <QuantCodes E, bool kMin, typename Sum>
inline float min_term(const QuantMatmulArgs& a, int64_t n, const Sum* xg) {
  const int64_t row = n * a.n_groups;
  float t = 0.0f;
  if constexpr (kMin) t += group_dot(a.mins, a.params_f16, row, xg, a.n_groups);
  if constexpr (E == QuantCodes::U4Sym)
    t -= 8.0f * group_dot(a.scales, a.params_f16, row, xg, a.n_groups);
  return t;
}

// Groups of 32 or more: sum value * x over the group unscaled, then scale the group's partial
// once (d * sum), and add the min as mn * (sum of x over the group), the latter from the
// caller's per-group sums of x (xgsum), once per output after the loop. U4Sym's - 8 is a min
// of -8 d.
template <QuantCodes E, bool kMin, int MR, int NR>
void a16_tile(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  if (a.group_size == 16) {
    a16_tile_g16<E, kMin, MR, NR>(a, m, n);
    return;
  }
  constexpr bool kMinTerm = kMin || E == QuantCodes::U4Sym;
  constexpr int64_t kBytes = chunk_bytes(E);
  const int64_t chunks = a.k / 32;
  const int64_t chunks_per_group = a.group_size / 32;
  const float* x = a.x + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  Vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vzero();
  int64_t g = 0;
  for (int64_t c0 = 0; c0 < chunks; c0 += chunks_per_group, ++g) {
    const int64_t c1 = c0 + chunks_per_group < chunks ? c0 + chunks_per_group : chunks;
    Vf part[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) part[i][j] = vzero();
    for (int64_t c = c0; c < c1; ++c) {
      for (int j = 0; j < NR; ++j) {
        prefetch_next_tile<kBytes, NR>(codes, a.code_row_bytes, c, j);
        Vf v[kSub];
        decode_values<E>(codes + j * a.code_row_bytes + c * kBytes, v);
        for (int q = 0; q < kSub; ++q)
          for (int i = 0; i < MR; ++i)
            part[i][j] = vfma(load_x<E>(x + i * a.ldx + c * 32 + q * kVL), v[q], part[i][j]);
      }
    }
    for (int j = 0; j < NR; ++j) {
      const Vf dv =
          vset1(load_param(a.scales, a.params_f16, (n + j) * a.n_groups + g) * value_scale(E));
      for (int i = 0; i < MR; ++i) acc[i][j] = vfma(part[i][j], dv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = vsum(acc[i][j]);
      if constexpr (kMinTerm) s += min_term<E, kMin>(a, n + j, a.xgsum + (m + i) * a.n_groups);
      if (a.bias) s += a.bias[n + j];
      a.y[(m + i) * a.ldy + n + j] = s;
    }
  }
}

// ---- a8: 32 int8 codes per chunk in one 256-bit register ----

// The 16 bytes in both lanes (a broadcast load, no ALU work), the upper lane shifted by 4:
// low nibbles (elements 0-15) in the lower lane, high nibbles (16-31) in the upper.
inline __m256i load_nibbles(const uint8_t* c) {
  const __m256i both =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
  return _mm256_and_si256(_mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                          _mm256_set1_epi8(0x0F));
}

// The activation scale of row `row`, group g, broadcast: per group when the caller quantized x
// per weight group (x_group_scale), else 1 (the per-row x_scale applies once, at the end).
inline __m256 x_group_scale(const QuantMatmulArgs& a, int64_t row, int64_t g) {
  return _mm256_set1_ps(a.x_group_scale ? a.x_group_scale[row * a.n_groups + g] : 1.0f);
}

// Adds each output's integer group sum (s16 pair sums when kPairSums16, else s32) into its f32
// accumulator, scaled by d_g (and s_g with per-group activation scales), and clears the sums.
template <bool kPairSums16, int MR, int NR>
inline void flush_group(const QuantMatmulArgs& a, int64_t m, int64_t n, int64_t g,
                        __m256i (&sum)[MR][NR], __m256 (&acc)[MR][NR]) {
  __m256 xs[MR];
  for (int i = 0; i < MR; ++i) xs[i] = x_group_scale(a, m + i, g);
  for (int j = 0; j < NR; ++j) {
    const __m256 dv = _mm256_set1_ps(load_param(a.scales, a.params_f16, (n + j) * a.n_groups + g));
    for (int i = 0; i < MR; ++i) {
      __m256i s32 = sum[i][j];
      if constexpr (kPairSums16) s32 = _mm256_madd_epi16(s32, _mm256_set1_epi16(1));
      acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dv, xs[i]), acc[i][j]);
      sum[i][j] = _mm256_setzero_si256();
    }
  }
}

// y = x_scale * (the f32 accumulators' sums + the min terms) + bias, for an MR x NR tile; with
// per-group activation scales the sums are already scaled and the min terms use the scaled
// group sums (xgsum).

template <QuantCodes E, bool kMin, int MR, int NR>
inline void a8_store(const QuantMatmulArgs& a, int64_t m, int64_t n, const __m256 (&acc)[MR][NR]) {
  constexpr bool kMinTerm = kMin || E == QuantCodes::U4Sym;
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum256(acc[i][j]);
      if (a.x_group_scale) {
        if constexpr (kMinTerm) s += min_term<E, kMin>(a, n + j, a.xgsum + (m + i) * a.n_groups);
      } else {
        if constexpr (kMinTerm) s += min_term<E, kMin>(a, n + j, a.xsum + (m + i) * a.n_groups);
        s *= a.x_scale[m + i];
      }
      if (a.bias) s += a.bias[n + j];
      a.y[(m + i) * a.ldy + n + j] = s;
    }
  }
}

// 4-bit codes go in as unsigned nibbles (no sign trick needed); U4Sym's - 8 is a min of -8 d
// times the group's sum of xq. 8-bit codes use the sign trick.
template <QuantCodes E, bool kMin, int MR, int NR>
void a8_tile(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  constexpr bool kPairSums16 = !kVnni && E != QuantCodes::S8;
  constexpr int kMaxPending = 8;
  constexpr int64_t kBytes = chunk_bytes(E);
  const int64_t chunks = a.k / 32;
  const int64_t chunks_per_group = a.group_size / 32;
  const int8_t* xq = a.xq + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  // One integer accumulator per output: s32 sums (VNNI, 8-bit codes), or s16 pair sums on
  // AVX2 for 4-bit codes. Its contents go into the f32 accumulator, scaled, at the end of a
  // group (and, for s16, after every eight chunks: a nibble (<= 15) times |xq| (<= 127) is at
  // most 3810 per pair, so eight chunks cannot saturate). Each part converts exactly (|sum| <
  // 2^24). Only two vectors per output: four rows of them fit the 16 AVX2 registers.
  const auto flush = [&](__m256i(&sum)[MR][NR], int64_t g) {
    flush_group<kPairSums16>(a, m, n, g, sum, acc);
  };
  int64_t g = 0;
  for (int64_t c0 = 0; c0 < chunks; c0 += chunks_per_group, ++g) {
    const int64_t c1 = c0 + chunks_per_group < chunks ? c0 + chunks_per_group : chunks;
    __m256i sum[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) sum[i][j] = _mm256_setzero_si256();
    int pending = 0;
    for (int64_t c = c0; c < c1; ++c) {
      for (int j = 0; j < NR; ++j) {
        prefetch_next_tile<kBytes, NR>(codes, a.code_row_bytes, c, j);
        const uint8_t* cj = codes + j * a.code_row_bytes + c * kBytes;
        if constexpr (E == QuantCodes::S8) {
          const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj));
          const __m256i w_abs = _mm256_abs_epi8(w);
          for (int i = 0; i < MR; ++i) {
            const __m256i xv =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + c * 32));
            sum[i][j] = dot_u8s8(sum[i][j], w_abs, _mm256_sign_epi8(xv, w));
          }
        } else {
          const __m256i u = load_nibbles(cj);
          for (int i = 0; i < MR; ++i) {
            const __m256i xv =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + c * 32));
            if constexpr (kPairSums16) {
              sum[i][j] = _mm256_add_epi16(sum[i][j], _mm256_maddubs_epi16(u, xv));
            } else {
              sum[i][j] = dot_u8s8(sum[i][j], u, xv);
            }
          }
        }
      }
      if constexpr (kPairSums16) {
        if (++pending == kMaxPending && c + 1 < c1) {
          flush(sum, g);
          pending = 0;
        }
      }
    }
    flush(sum, g);
  }
  a8_store<E, kMin>(a, m, n, acc);
}

// ---- a8, 4-bit codes in the 64-element form (kernel_table.h, nibbles64) ----

// Both halves of a 64-element block: elements 0-31 (low nibbles) and 32-63 (high nibbles).
inline void split_nibbles64(const uint8_t* c, __m256i& lo, __m256i& hi) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
  const __m256i mask = _mm256_set1_epi8(0x0F);
  lo = _mm256_and_si256(w, mask);
  hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
}

// Sum over one group: the whole group's products into s32 lanes.
inline __m256i group_sum32(__m256i u, __m256i x) {
#if defined(NIBBLE_ISA_avx512)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
#endif
}

// Parameters i and i + 1 of a row's f16 (or f32) parameters, each broadcast: an f16 pair is
// one 32-bit load and one conversion.
inline void load_param_pair(const uint16_t* p, __m256& d0, __m256& d1) {
  int32_t bits;
  __builtin_memcpy(&bits, p, 4);
  const __m128 both = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
  d0 = _mm256_broadcastss_ps(both);
  d1 = _mm256_broadcastss_ps(_mm_movehdup_ps(both));
}
inline void load_param_pair(const float* p, __m256& d0, __m256& d1) {
  d0 = _mm256_broadcast_ss(p);
  d1 = _mm256_broadcast_ss(p + 1);
}
inline __m256 load_param_v(const uint16_t* p) {
  return _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(*p)));
}
inline __m256 load_param_v(const float* p) { return _mm256_broadcast_ss(p); }

// Eight f16 (or f32) parameters p[0..7] as f32.
inline __m256 load_params8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load_params8(const float* p) { return _mm256_loadu_ps(p); }

// 32-element groups (Q4_0, Q4_K's sub-blocks, int4wo-32): the two halves of a block are two
// groups, each scaled once; nothing is kept in integers across blocks. At M = 1 this tile is
// compute-bound on AVX2 (two cores), so the scale work is taken out of the per-group path:
// eight groups' weight scales and activation scales are loaded as vectors and multiplied once,
// and a permute broadcasts each group's product (per group and output: one permute instead of
// an f16 load, conversion, broadcast and multiplication). The remaining blocks (fewer than
// eight groups) take the scales one pair at a time.
template <QuantCodes E, bool kMin, int MR, int NR, typename Param>
void a8_tile_n64_g32(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  const int64_t chunks = a.k / 32, pairs = chunks / 2;
  const Param* params = static_cast<const Param*>(a.scales) + n * a.n_groups;
  const int8_t* xq = a.xq + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 4 <= pairs; p += 4) {
    const int64_t g0 = 2 * p;
    __m256 xs[MR];
    for (int i = 0; i < MR; ++i) {
      xs[i] = a.x_group_scale ? _mm256_loadu_ps(a.x_group_scale + (m + i) * a.n_groups + g0)
                              : _mm256_set1_ps(1.0f);
    }
    // One output row at a time through the block (the activations are reloaded from L1 per
    // row): the AVX2 register file holds the accumulators, one row's scales and the operands.
    for (int j = 0; j < NR; ++j) {
      __m256 scale[MR];  // d_g · s_g of groups g0 .. g0 + 7
      const __m256 d = load_params8(params + j * a.n_groups + g0);
      for (int i = 0; i < MR; ++i) scale[i] = _mm256_mul_ps(d, xs[i]);
      const uint8_t* cj = codes + j * a.code_row_bytes + p * 32;
      for (int64_t l = 0; l < 128; l += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(cj + NR * a.code_row_bytes + l), _MM_HINT_T0);
      }
      for (int q = 0; q < 4; ++q) {
        __m256i lo, hi;
        split_nibbles64(cj + q * 32, lo, hi);
        const __m256i pick0 = _mm256_set1_epi32(2 * q), pick1 = _mm256_set1_epi32(2 * q + 1);
        for (int i = 0; i < MR; ++i) {
          const int8_t* xi = xq + i * a.ldx + (p + q) * 64;
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xi + 32));
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_sum32(lo, x0)),
                                      _mm256_permutevar8x32_ps(scale[i], pick0), acc[i][j]);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_sum32(hi, x1)),
                                      _mm256_permutevar8x32_ps(scale[i], pick1), acc[i][j]);
        }
      }
    }
  }
  for (; p < pairs; ++p) {
    __m256i x0[MR], x1[MR];
    __m256 xs0[MR], xs1[MR];
    for (int i = 0; i < MR; ++i) {
      x0[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + p * 64));
      x1[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + p * 64 + 32));
      xs0[i] = x_group_scale(a, m + i, 2 * p);
      xs1[i] = x_group_scale(a, m + i, 2 * p + 1);
    }
    for (int j = 0; j < NR; ++j) {
      prefetch_next_tile<32, NR>(codes, a.code_row_bytes, p, j);
      __m256i lo, hi;
      split_nibbles64(codes + j * a.code_row_bytes + p * 32, lo, hi);
      __m256 d0, d1;
      load_param_pair(params + j * a.n_groups + 2 * p, d0, d1);
      for (int i = 0; i < MR; ++i) {
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_sum32(lo, x0[i])),
                                    _mm256_mul_ps(d0, xs0[i]), acc[i][j]);
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_sum32(hi, x1[i])),
                                    _mm256_mul_ps(d1, xs1[i]), acc[i][j]);
      }
    }
  }
  if (chunks % 2) {  // the last chunk, in the 16-byte form, is the last group
    const int64_t c = chunks - 1;
    for (int j = 0; j < NR; ++j) {
      const __m256i u = load_nibbles(codes + j * a.code_row_bytes + c * 16);
      const __m256 d = load_param_v(params + j * a.n_groups + c);
      for (int i = 0; i < MR; ++i) {
        const __m256i xv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + c * 32));
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_sum32(u, xv)),
                                    _mm256_mul_ps(d, x_group_scale(a, m + i, c)), acc[i][j]);
      }
    }
  }
  a8_store<E, kMin>(a, m, n, acc);
}

// Groups of a multiple of 64 (or one group per row): integer sums over a group, as a8_tile.
template <QuantCodes E, bool kMin, int MR, int NR>
void a8_tile_n64_wide(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  constexpr int kMaxPending = 8;  // chunks of s16 pair sums (see a8_tile)
  const int64_t chunks = a.k / 32, pairs = chunks / 2;
  const int64_t pairs_per_group = a.n_groups == 1 ? pairs : a.group_size / 64;
  const int8_t* xq = a.xq + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  __m256i sum[MR][NR];
  const auto flush = [&](int64_t g) { flush_group<!kVnni>(a, m, n, g, sum, acc); };
  for (int64_t g = 0; g < a.n_groups; ++g) {
    const int64_t p0 = g * pairs_per_group;
    const int64_t p1 = p0 + pairs_per_group < pairs ? p0 + pairs_per_group : pairs;
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) sum[i][j] = _mm256_setzero_si256();
    int pending = 0;
    for (int64_t p = p0; p < p1; ++p) {
      __m256i x0[MR], x1[MR];
      for (int i = 0; i < MR; ++i) {
        x0[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + p * 64));
        x1[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + p * 64 + 32));
      }
      for (int j = 0; j < NR; ++j) {
        prefetch_next_tile<32, NR>(codes, a.code_row_bytes, p, j);
        __m256i lo, hi;
        split_nibbles64(codes + j * a.code_row_bytes + p * 32, lo, hi);
        for (int i = 0; i < MR; ++i) {
          if constexpr (kVnni) {
            sum[i][j] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(sum[i][j], lo, x0[i]), hi, x1[i]);
          } else {
            sum[i][j] = _mm256_add_epi16(
                sum[i][j],
                _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0[i]), _mm256_maddubs_epi16(hi, x1[i])));
          }
        }
      }
      if constexpr (!kVnni) {
        pending += 2;
        if (pending == kMaxPending && p + 1 < p1) {
          flush(g);
          pending = 0;
        }
      }
    }
    if (chunks % 2 && g == a.n_groups - 1) {  // the last chunk, in the 16-byte form
      if (!kVnni && pending == kMaxPending) flush(g);
      const int64_t c = chunks - 1;
      for (int j = 0; j < NR; ++j) {
        const __m256i u = load_nibbles(codes + j * a.code_row_bytes + c * 16);
        for (int i = 0; i < MR; ++i) {
          const __m256i xv =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * a.ldx + c * 32));
          if constexpr (kVnni) {
            sum[i][j] = _mm256_dpbusd_epi32(sum[i][j], u, xv);
          } else {
            sum[i][j] = _mm256_add_epi16(sum[i][j], _mm256_maddubs_epi16(u, xv));
          }
        }
      }
    }
    flush(g);
  }
  a8_store<E, kMin>(a, m, n, acc);
}

// G = 64 kPairs (at most 256, so that AVX2's s16 pair sums need no flush inside a group) and K
// a multiple of G: the group's blocks fully unrolled, one prefetch per 64 code bytes, and no
// bookkeeping but the group loop. The common decode shape (int4 g128, GPTQ, AWQ).
template <QuantCodes E, bool kMin, int MR, int NR, int kPairs, typename Param>
void a8_tile_n64_fixed(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  static_assert(kPairs >= 1 && kPairs <= 4);
  const Param* params = static_cast<const Param*>(a.scales) + n * a.n_groups;
  constexpr int64_t kGroupBytes = 32 * kPairs;
  const int8_t* xq = a.xq + m * a.ldx;
  const uint8_t* codes = a.codes + n * a.code_row_bytes;
  const int64_t rb = a.code_row_bytes;
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t g = 0; g < a.n_groups; ++g) {
    const uint8_t* cg = codes + g * kGroupBytes;
    const int8_t* xg = xq + g * 64 * kPairs;
    for (int j = 0; j < NR; ++j)
      for (int64_t l = 0; l < kGroupBytes; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(cg + (NR + j) * rb + l), _MM_HINT_T0);
    __m256i sum[MR][NR];
    for (int p = 0; p < kPairs; ++p) {
      __m256i x0[MR], x1[MR];
      for (int i = 0; i < MR; ++i) {
        x0[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + i * a.ldx + p * 64));
        x1[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + i * a.ldx + p * 64 + 32));
      }
      for (int j = 0; j < NR; ++j) {
        __m256i lo, hi;
        split_nibbles64(cg + j * rb + p * 32, lo, hi);
        for (int i = 0; i < MR; ++i) {
#if defined(NIBBLE_ISA_avx512)
          const __m256i base = p == 0 ? _mm256_setzero_si256() : sum[i][j];
          sum[i][j] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(base, lo, x0[i]), hi, x1[i]);
#else
          const __m256i both =
              _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0[i]), _mm256_maddubs_epi16(hi, x1[i]));
          sum[i][j] = p == 0 ? both : _mm256_add_epi16(sum[i][j], both);
#endif
        }
      }
    }
    __m256 xs[MR];
    for (int i = 0; i < MR; ++i) xs[i] = x_group_scale(a, m + i, g);
    for (int j = 0; j < NR; ++j) {
      const __m256 dv = load_param_v(params + j * a.n_groups + g);
      for (int i = 0; i < MR; ++i) {
#if defined(NIBBLE_ISA_avx512)
        const __m256i s32 = sum[i][j];
#else
        const __m256i s32 = _mm256_madd_epi16(sum[i][j], _mm256_set1_epi16(1));
#endif
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dv, xs[i]), acc[i][j]);
      }
    }
  }
  a8_store<E, kMin>(a, m, n, acc);
}

template <QuantCodes E, bool kMin, int MR, int NR>
void a8_tile_n64(const QuantMatmulArgs& a, int64_t m, int64_t n) {
  const bool whole_groups = a.k % a.group_size == 0;
  const bool f16 = a.params_f16;
  if (a.group_size == 32) {
    f16 ? a8_tile_n64_g32<E, kMin, MR, NR, uint16_t>(a, m, n)
        : a8_tile_n64_g32<E, kMin, MR, NR, float>(a, m, n);
  } else if (a.group_size == 128 && whole_groups) {
    f16 ? a8_tile_n64_fixed<E, kMin, MR, NR, 2, uint16_t>(a, m, n)
        : a8_tile_n64_fixed<E, kMin, MR, NR, 2, float>(a, m, n);
  } else if (a.group_size == 64 && whole_groups) {
    f16 ? a8_tile_n64_fixed<E, kMin, MR, NR, 1, uint16_t>(a, m, n)
        : a8_tile_n64_fixed<E, kMin, MR, NR, 1, float>(a, m, n);
  } else if (a.group_size == 256 && whole_groups) {
    f16 ? a8_tile_n64_fixed<E, kMin, MR, NR, 4, uint16_t>(a, m, n)
        : a8_tile_n64_fixed<E, kMin, MR, NR, 4, float>(a, m, n);
  } else {
    a8_tile_n64_wide<E, kMin, MR, NR>(a, m, n);
  }
}

// ---- drivers ----

template <QuantCodes E, bool kMin>
Tiles n64_tiles() {
  return {a8_tile_n64<E, kMin, 1, kGemvRows>, a8_tile_n64<E, kMin, 1, 1>,
          a8_tile_n64<E, kMin, kTileM, kTileN>, a8_tile_n64<E, kMin, kTileM, 1>,
          a8_tile_n64<E, kMin, 1, kTileN>};
}

template <bool kA8, QuantCodes E, bool kMin>
Tiles make_tiles() {
  if constexpr (kA8) {
    return {a8_tile<E, kMin, 1, kGemvRows>, a8_tile<E, kMin, 1, 1>,
            a8_tile<E, kMin, kTileM, kTileN>, a8_tile<E, kMin, kTileM, 1>,
            a8_tile<E, kMin, 1, kTileN>};
  } else {
    return {a16_tile<E, kMin, 1, kGemvRows>, a16_tile<E, kMin, 1, 1>,
            a16_tile<E, kMin, kTileM, kTileN>, a16_tile<E, kMin, kTileM, 1>,
            a16_tile<E, kMin, 1, kTileN>};
  }
}

template <bool kA8, QuantCodes E>
Tiles tiles_for_min(bool mins) {
  return mins ? make_tiles<kA8, E, true>() : make_tiles<kA8, E, false>();
}

}  // namespace

void quant_matmul_a16(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const bool mins = a.mins != nullptr;
  Tiles t;
  switch (a.codes_kind) {
    case QuantCodes::U4Sym: t = tiles_for_min<false, QuantCodes::U4Sym>(mins); break;
    case QuantCodes::U4: t = tiles_for_min<false, QuantCodes::U4>(mins); break;
    case QuantCodes::S8: t = tiles_for_min<false, QuantCodes::S8>(mins); break;
    case QuantCodes::Fp8E4M3: t = tiles_for_min<false, QuantCodes::Fp8E4M3>(mins); break;
    case QuantCodes::Fp8E5M2: t = tiles_for_min<false, QuantCodes::Fp8E5M2>(mins); break;
    case QuantCodes::Nf4: t = tiles_for_min<false, QuantCodes::Nf4>(mins); break;
    case QuantCodes::Fp4E2M1: t = tiles_for_min<false, QuantCodes::Fp4E2M1>(mins); break;
    default: return;
  }
  run_tiles(t, a, n_begin, n_end);
}

void quant_matmul_a8(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end) {
  const bool mins = a.mins != nullptr;
  Tiles t;
  if (a.nibbles64 && (a.codes_kind == QuantCodes::U4Sym || a.codes_kind == QuantCodes::U4)) {
    if (a.codes_kind == QuantCodes::U4Sym) {
      t = mins ? n64_tiles<QuantCodes::U4Sym, true>() : n64_tiles<QuantCodes::U4Sym, false>();
    } else {
      t = mins ? n64_tiles<QuantCodes::U4, true>() : n64_tiles<QuantCodes::U4, false>();
    }
    run_tiles(t, a, n_begin, n_end);
    return;
  }
  if (a.codes_kind == QuantCodes::S8 && a.group_size == 32 && !mins) {
    return quant_matmul_a8_s8_g32(a, n_begin, n_end);
  }
  switch (a.codes_kind) {
    case QuantCodes::U4Sym: t = tiles_for_min<true, QuantCodes::U4Sym>(mins); break;
    case QuantCodes::U4: t = tiles_for_min<true, QuantCodes::U4>(mins); break;
    case QuantCodes::S8: t = tiles_for_min<true, QuantCodes::S8>(mins); break;
    default: return;  // the caller only sends integer codes here
  }
  run_tiles(t, a, n_begin, n_end);
}

}  // namespace nibble::cpu::NIBBLE_ISA
