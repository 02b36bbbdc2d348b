#pragma once
// Device helpers shared by the W4A16/W8A16 kernels (wxa16_linear.cu, w4a16_gemv.cu): the
// tensor-core instruction wrappers and the in-register dequantization of the repacked codes
// (layout: wxa16_linear.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include "backend/cuda/wxa16_linear.h"

namespace nibble::cuda::wxa16_detail {

// Calls f(std::integral_constant<int, I>) for I = 0..N-1: compile-time indices keep the register
// arrays in registers.
template <typename F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same with f16 operands (fp8 e4m3 codes are exact in f16).
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&a)[4], const __nv_bfloat16* smem) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(address));
}

// The transposed load: lane t gets rows 2(t%4), 2(t%4)+1 of column t/4 of each 8×8 matrix (the
// B fragment of a row-major [k][n] tile, e.g. attention's V).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&a)[4], const __nv_bfloat16* smem) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(address));
}

// Asynchronous global → shared copies (sm_80+), committed and awaited in groups.
__device__ __forceinline__ void cp_async_16(void* smem, const void* global) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global));
}
// src_bytes 0 fills the 16 bytes with zeros (rows past M, columns past K).
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* global, int src_bytes) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_4(void* smem, const void* global) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(address), "l"(global));
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <int W>
__device__ __forceinline__ uint32_t word_of(const uint4& q) {
  if constexpr (W == 0) return q.x;
  if constexpr (W == 1) return q.y;
  if constexpr (W == 2) return q.z;
  return q.w;
}

__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  __nv_bfloat162 r =
      __hsub2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

__device__ __forceinline__ uint32_t bf16x2_pack(float lo, float hi) {
  __nv_bfloat162 r = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&r);
}

// What a lane subtracts from its codes for one group: 4-bit, the bf16 pair (128+z, 128+z)
// (0x4300 is 128.0, and 128 + a 4-bit code is exact in bf16's 8-bit significand); 8-bit, the
// f32 2^23 + z (0x4B000000 | byte is 2^23 + byte).
template <int BITS>
__device__ __forceinline__ uint32_t zero_word(int z) {
  if constexpr (BITS == 4) {
    return (0x4300u + uint32_t(z)) * 0x10001u;
  } else {
    return __float_as_uint(8388608.0f + float(z));
  }
}

// The B fragment (b0: k = 2t, 2t+1; b1: k = 2t+8, 2t+9) of mma step STEP of a unit.
template <int BITS, int STEP>
__device__ __forceinline__ void b_fragment(const uint4& q, uint32_t zero, uint32_t& b0,
                                           uint32_t& b1) {
  if constexpr (BITS == 4) {
    const uint32_t word = word_of<STEP / 2>(q);
    constexpr int j = (STEP % 2) * 2;
    b0 = bf16x2_sub(((word >> (4 * j)) & 0x000F000Fu) | 0x43004300u, zero);
    b1 = bf16x2_sub(((word >> (4 * j + 4)) & 0x000F000Fu) | 0x43004300u, zero);
  } else {
    const uint32_t word = word_of<STEP>(q);
    const float z = __uint_as_float(zero);
    const float f0 = __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540)) - z;
    const float f1 = __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7541)) - z;
    const float f2 = __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7542)) - z;
    const float f3 = __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7543)) - z;
    b0 = bf16x2_pack(f0, f1);
    b1 = bf16x2_pack(f2, f3);
  }
}

__device__ __forceinline__ float2 load_scale_pair(const void* scales, int type, int64_t index) {
  if (type == int(WxA16ScaleType::F16)) {
    return __half22float2(*(static_cast<const __half2*>(scales) + index / 2));
  }
  if (type == int(WxA16ScaleType::BF16)) {
    return __bfloat1622float2(*(static_cast<const __nv_bfloat162*>(scales) + index / 2));
  }
  return *reinterpret_cast<const float2*>(static_cast<const float*>(scales) + index);
}

__device__ __forceinline__ float load_scale(const void* scales, int type, int64_t index) {
  if (type == int(WxA16ScaleType::F16))
    return __half2float(static_cast<const __half*>(scales)[index]);
  if (type == int(WxA16ScaleType::BF16)) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(scales)[index]);
  }
  return static_cast<const float*>(scales)[index];
}

// +32 elements per staged row of x: consecutive rows start 64 bytes apart modulo 128, so lanes of
// batch rows g and g+1 (one 16-byte-load phase) hit disjoint banks.
constexpr int kStagedRowPad = 32;

// Position of unit column c (0..127, or 0..63 for 8-bit units) in a staged, permuted x row:
// 16-byte chunk (c / 32)·4 + t holds lane t's B fragments of steps 2·chunk and 2·chunk + 1:
// [b0(even), b1(even), b0(odd), b1(odd)], so a lane reads a unit's fragments with 16-byte loads.
__device__ __forceinline__ int permuted_column(int c) {
  const int step = c / 16, w = c % 16;
  const int t = (w % 8) / 2, hi = w / 8, e = w % 2;
  return ((step / 2) * 4 + t) * 8 + (step % 2) * 4 + hi * 2 + e;
}

// Stages columns [k0, k0 + cols) of the m rows of the GEMV input into xs (row stride `stride`
// elements), each unit's columns permuted. `load8(r, k)` returns columns k .. k+7 of row r as 8
// packed bf16 (zeros past the row's end). Threads `thread` of `threads` share the work.
template <int kUnitCols, typename Load8>
__device__ __forceinline__ void stage_permuted(__nv_bfloat16* xs, int stride, int m, int k0,
                                               int cols, int thread, int threads,
                                               const Load8& load8) {
  const int vectors_per_row = cols / 8;
  for (int i = thread; i < m * vectors_per_row; i += threads) {
    const int r = i / vectors_per_row, c = (i % vectors_per_row) * 8;
    const uint4 v = load8(r, k0 + c);
    // Eight consecutive columns are four (k, k+1) pairs that stay adjacent after permutation.
    __nv_bfloat16* row = xs + r * stride + (c / kUnitCols) * kUnitCols;
    const int cu = c % kUnitCols;
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      *reinterpret_cast<uint32_t*>(row + permuted_column(cu + 2 * j)) = words[j];
    }
  }
}

// Columns [k, k + 8) of row r of x (row length n), zeros past n.
__device__ __forceinline__ uint4 load8_bf16(const __nv_bfloat16* x, int r, int k, int n,
                                            bool vector) {
  const __nv_bfloat16* src = x + size_t(r) * n + k;
  if (vector && k + 8 <= n) return *reinterpret_cast<const uint4*>(src);
  __nv_bfloat16 e[8];
  for (int j = 0; j < 8; ++j) e[j] = k + j < n ? src[j] : __float2bfloat16(0.0f);
  return *reinterpret_cast<const uint4*>(e);
}

// stage_permuted of plain bf16 rows x[m][k].
template <int kUnitCols>
__device__ __forceinline__ void stage_x_permuted(__nv_bfloat16* xs, int stride,
                                                 const __nv_bfloat16* x, int m, int k, int k0,
                                                 int cols, bool x_vector, int thread, int threads) {
  stage_permuted<kUnitCols>(xs, stride, m, k0, cols, thread, threads,
                            [&](int r, int kk) { return load8_bf16(x, r, kk, k, x_vector); });
}

// The split-K epilogue: y[row][col] = Σ_s partial[s][row][col] for rows < m and the `cols`
// columns from col_begin (both multiples of 4, as is ld), summed in split order from zero so that
// the result does not depend on which CTA finished last. Each thread keeps kBatch float4 cells of
// four splits in flight: a loop over one cell at a time waits an L2 round trip per cell (64 rows
// × 256 columns is ~64 dependent round trips per thread at M = 64), and one over one split at a
// time waits one per split (the decode GEMV runs up to 16 splits at M = 1).
template <int kThreads>
__device__ __forceinline__ void reduce_split_slices(const float* __restrict__ partial,
                                                    int64_t slice_elems, int splits, int m,
                                                    int64_t ld, int64_t col_begin, int64_t cols,
                                                    __nv_bfloat16* __restrict__ y, int64_t n) {
  constexpr int kBatch = 4, kSplits = 4;
  const int64_t quads_per_row = cols / 4;
  const int64_t quads = int64_t(m) * quads_per_row;
  for (int64_t base = 0; base < quads; base += int64_t(kThreads) * kBatch) {
    float4 sum[kBatch];
    int64_t offset[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int64_t q = base + int64_t(b) * kThreads + threadIdx.x;
      offset[b] = q < quads ? (q / quads_per_row) * ld + col_begin + (q % quads_per_row) * 4 : -1;
      sum[b] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    for (int s0 = 0; s0 < splits; s0 += kSplits) {
      float4 v[kBatch][kSplits];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
#pragma unroll
        for (int j = 0; j < kSplits; ++j) {
          const bool live = offset[b] >= 0 && s0 + j < splits;
          v[b][j] = live ? __ldcg(reinterpret_cast<const float4*>(
                               partial + int64_t(s0 + j) * slice_elems + offset[b]))
                         : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
#pragma unroll
        for (int j = 0; j < kSplits; ++j) {
          if (s0 + j >= splits) break;
          sum[b].x += v[b][j].x;
          sum[b].y += v[b][j].y;
          sum[b].z += v[b][j].z;
          sum[b].w += v[b][j].w;
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (offset[b] < 0) continue;
      const int64_t row = offset[b] / ld, col = offset[b] % ld;
      __nv_bfloat16* out = y + row * n + col;
      const float e[4] = {sum[b].x, sum[b].y, sum[b].z, sum[b].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (col + j < n) out[j] = __float2bfloat16(e[j]);
      }
    }
  }
}

}  // namespace nibble::cuda::wxa16_detail
