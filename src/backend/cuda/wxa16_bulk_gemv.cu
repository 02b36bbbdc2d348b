// The W4A16 / W8A16 decode kernel for Hopper (sm_90+, M ≤ 8): a persistent GEMV whose weights
// reach shared memory by bulk asynchronous copies (`cp.async.bulk`, the copy engine's 1-D form)
// into a ring of stages, with one producer thread per CTA and eight consumer warps.
//
// Why next to the register-streaming GEMV (w4a16_gemv.cu): that kernel keeps in flight only what
// its warps' registers hold, and a warp issues its next loads only after it has used the last
// ones. Nsight Compute on it (4096×28672, M = 1, H100) found DRAM 37% busy with 1.1 eligible
// warps of 5.1 per scheduler: latency-bound, not instruction-bound (halving its instructions did
// not move its time). Here the producer keeps `stages` × stage bytes in flight per SM whatever
// the consumers are doing, and the consumers never wait on global memory.
//
// Work: a pair of 8-row tiles (16 output features: one m16 A fragment, as in w4a16_gemv.cu) over
// the whole K. CTA c takes pairs c, c + G, c + 2G, ... (G CTAs), so neither split-K nor a
// workspace is needed. A stage is one chunk of U = 8·UPW units of both tiles of a pair: their
// codes (U × 512 contiguous bytes per tile in the repacked layout), scale rows and zero rows,
// each one bulk copy. Consumer warp w decodes units w, w + 8, ... of every stage; when a pair's
// last chunk is done the eight warps add their partial sums through shared memory in warp order,
// so results are bit-identical run to run.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/device_properties.h"
#include "backend/cuda/programmatic_launch.cuh"
#include "backend/cuda/wxa16_device.cuh"
#include "backend/cuda/wxa16_linear.h"

namespace nibble::cuda {
namespace {

using namespace wxa16_detail;

constexpr int kConsumerWarps = 8;
constexpr int kConsumerThreads = kConsumerWarps * 32;
constexpr int kThreads = kConsumerThreads + 32;
constexpr int kUnitBytes = 512;
constexpr int kMaxM = 8;
template <int BITS>
constexpr int kUnitColsOf = BITS == 4 ? 128 : 64;
// Partial sums of one pair: 8 warps × 32 lanes × 4 accumulators, double-buffered.
constexpr int kReduceFloats = kConsumerWarps * 32 * 4;
constexpr int kReduceBytes = 2 * kReduceFloats * 4;

struct BulkParams {
  const unsigned char* codes;
  const unsigned char* scales;
  const unsigned char* zeros;  // null when symmetric
  int scale_bytes;             // 2 (f16, bf16) or 4 (f32)
  int scale_type;
  int symmetric_zero;
  int n_groups;
  int units_per_group;     // group_size / unit columns when a group spans whole units, else 0
  int group_shift;         // log2(units_per_group) when that is a power of two, else -1
  const __nv_bfloat16* x;  // Plain: x; ResidualRmsNorm: the residual; SiluMul: gate_up
  int input_kind;          // WxA16Input::Kind
  const __nv_bfloat16* delta;
  const __nv_bfloat16* norm_weight;
  __nv_bfloat16* residual_out;
  float eps;
  int m;
  int k;
  bool x_vector;
  int k_units;
  int n_tiles;
  int n;
  __nv_bfloat16* y;
  int pairs;
  int chunks;       // per pair: ⌈k_units / U⌉
  int stages;       // ring depth
  int stage_bytes;  // codes of both tiles, then their scale rows, then their zero rows
  int scale_area;   // bytes of one tile's scale rows in a stage
  int zero_area;    // bytes of one tile's zero rows in a stage
  int x_stride;     // elements per staged row of x
  int ring_offset;  // bytes from the start of dynamic shared memory
  int reduce_offset;
  int barrier_offset;
};

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}

__device__ __forceinline__ void barrier_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}

__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}

// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared memory; the
// barrier's transaction count drops by `bytes` when they have landed.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
#endif
}

// Named barrier 1: the consumer warps only (the producer warp may have left).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"r"(kConsumerThreads) : "memory");
}

// Two e4m3 codes (low byte first) as an f16 pair: exact, every e4m3 value is an f16.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xFFFFu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// The e4m3 code of v (round to nearest even, saturating), as quantize_fp8_per_token computes it.
__device__ __forceinline__ uint32_t to_e4m3(float v) {
  return uint32_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ uint4 load_shared16(const unsigned char* p) {
  return *reinterpret_cast<const uint4*>(p);
}

// The group rows that units [u0, u0 + n) of a tile use: [first, last].
template <int SEGS>
__device__ __forceinline__ int group_of(const BulkParams& p, int u, int seg) {
  if constexpr (SEGS > 1) {
    return u * SEGS + seg;
  } else {
    // Per-channel scales and power-of-two units per group (g128 is 1) avoid the division.
    if (p.n_groups == 1) return 0;
    const int group = p.group_shift >= 0 ? u >> p.group_shift : u / p.units_per_group;
    return min(group, p.n_groups - 1);
  }
}

constexpr int kPlain = int(WxA16Input::Kind::Plain);
constexpr int kResidualRmsNorm = int(WxA16Input::Kind::ResidualRmsNorm);

__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16(v));
}

// Columns [k, k + 8) of h = bf16(residual + delta) of row r (K is a multiple of 8 here).
__device__ __forceinline__ void residual8(const BulkParams& p, int r, int k, float (&h)[8]) {
  const uint4 rv = *reinterpret_cast<const uint4*>(p.x + size_t(r) * p.k + k);
  const auto* r2 = reinterpret_cast<const __nv_bfloat162*>(&rv);
  uint4 dv = make_uint4(0, 0, 0, 0);
  if (p.delta != nullptr) dv = *reinterpret_cast<const uint4*>(p.delta + size_t(r) * p.k + k);
  const auto* d2 = reinterpret_cast<const __nv_bfloat162*>(&dv);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 a = __bfloat1622float2(r2[j]);
    if (p.delta != nullptr) {
      const float2 b = __bfloat1622float2(d2[j]);
      h[2 * j] = round_bf16(a.x + b.x);
      h[2 * j + 1] = round_bf16(a.y + b.y);
    } else {
      h[2 * j] = a.x;
      h[2 * j + 1] = a.y;
    }
  }
}

__device__ __forceinline__ uint4 pack8(const float (&v)[8]) {
  uint4 out;
  out.x = bf16x2_pack(v[0], v[1]);
  out.y = bf16x2_pack(v[2], v[3]);
  out.z = bf16x2_pack(v[4], v[5]);
  out.w = bf16x2_pack(v[6], v[7]);
  return out;
}

// Stages the GEMV input (WxA16Input) into xs. With FP8 (e4m3 weights) the input is quantized per
// row as quantize_fp8_per_token does (scale = max|x| / 448, codes e4m3(x / scale)) and staged as
// the codes' f16 values; x_scale[r] gets the scales. `scratch` holds 2 × kMaxM × 8 floats until
// the caller's next consumers_sync().
template <int kUnitCols, bool FP8>
__device__ __forceinline__ void stage_input(const BulkParams& p, __nv_bfloat16* xs, float* scratch,
                                            float* x_scale) {
  const int cols = p.k_units * kUnitCols;
  const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
  if (!FP8 && p.input_kind == kPlain) {
    stage_x_permuted<kUnitCols>(xs, p.x_stride, p.x, p.m, p.k, 0, cols, p.x_vector, thread,
                                kConsumerThreads);
    return;
  }
  if (p.input_kind == kResidualRmsNorm) {
    // Pass 1: h, its sum of squares per row (the first CTA also stores h).
    const int vectors = p.k / 8;
    for (int r = 0; r < p.m; ++r) {
      float sum = 0.0f;
      for (int v = thread; v < vectors; v += kConsumerThreads) {
        float h[8];
        residual8(p, r, v * 8, h);
        if (blockIdx.x == 0 && p.residual_out != nullptr) {
          *reinterpret_cast<uint4*>(p.residual_out + size_t(r) * p.k + v * 8) = pack8(h);
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) sum = fmaf(h[j], h[j], sum);
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0) scratch[r * kConsumerWarps + warp] = sum;
    }
    consumers_sync();
  }
  // Columns [k, k + 8) of row r of the input, as the bf16 values the unfused kernels produce.
  const auto value8 = [&](int r, int k, float(&out)[8]) {
    if (p.input_kind == kPlain) {
      const uint4 raw = load8_bf16(p.x, r, k, p.k, p.x_vector);
      const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(x2[j]);
        out[2 * j] = f.x;
        out[2 * j + 1] = f.y;
      }
      return;
    }
    if (k >= p.k) {
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = 0.0f;
      return;
    }
    if (p.input_kind == kResidualRmsNorm) {
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) total += scratch[r * kConsumerWarps + w];
      const float inv = rsqrtf(total / float(p.k) + p.eps);
      float h[8];
      residual8(p, r, k, h);
      const uint4 wv = *reinterpret_cast<const uint4*>(p.norm_weight + k);
      const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 wf = __bfloat1622float2(w2[j]);
        out[2 * j] = round_bf16(wf.x * round_bf16(h[2 * j] * inv));
        out[2 * j + 1] = round_bf16(wf.y * round_bf16(h[2 * j + 1] * inv));
      }
      return;
    }
    // SiluMul: x is gate_up, rows of 2K.
    const __nv_bfloat16* row = p.x + size_t(r) * 2 * p.k;
    const uint4 gv = *reinterpret_cast<const uint4*>(row + k);
    const uint4 uv = *reinterpret_cast<const uint4*>(row + p.k + k);
    const auto* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
    const auto* u2 = reinterpret_cast<const __nv_bfloat162*>(&uv);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 g = __bfloat1622float2(g2[j]);
      const float2 u = __bfloat1622float2(u2[j]);
      out[2 * j] = round_bf16(round_bf16(g.x / (1.0f + expf(-g.x))) * u.x);
      out[2 * j + 1] = round_bf16(round_bf16(g.y / (1.0f + expf(-g.y))) * u.y);
    }
  };
  if constexpr (!FP8) {
    stage_permuted<kUnitCols>(xs, p.x_stride, p.m, 0, cols, thread, kConsumerThreads,
                              [&](int r, int k) {
                                float v[8];
                                value8(r, k, v);
                                return pack8(v);
                              });
  } else {
    float* amax_of = scratch + kMaxM * kConsumerWarps;
    for (int r = 0; r < p.m; ++r) {
      float amax = 0.0f;
      for (int v = thread; v < cols / 8; v += kConsumerThreads) {
        float vals[8];
        value8(r, v * 8, vals);
#pragma unroll
        for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(vals[j]));
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      if (lane == 0) amax_of[r * kConsumerWarps + warp] = amax;
    }
    consumers_sync();
    const auto scale_of = [&](int r) {
      float amax = 0.0f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) amax = fmaxf(amax, amax_of[r * kConsumerWarps + w]);
      return amax > 0.0f ? amax / 448.0f : 1.0f;
    };
    if (thread < p.m) x_scale[thread] = scale_of(thread);
    stage_permuted<kUnitCols>(
        xs, p.x_stride, p.m, 0, cols, thread, kConsumerThreads, [&](int r, int k) {
          float v[8];
          value8(r, k, v);
          const float scale = scale_of(r);
          uint32_t words[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            words[j] =
                e4m3x2_to_f16x2(to_e4m3(v[2 * j] / scale) | (to_e4m3(v[2 * j + 1] / scale) << 8));
          }
          return make_uint4(words[0], words[1], words[2], words[3]);
        });
  }
}

template <int BITS, bool FP8, int SPG, int UPW>
__global__ void __launch_bounds__(kThreads, 1) wxa16_bulk_gemv_kernel(BulkParams p) {
  static_assert(!FP8 || (BITS == 8 && SPG == 4), "e4m3 codes: 8-bit units, one group per unit");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kUnitCols = kUnitColsOf<BITS>;
  constexpr int STEPS = kUnitCols / 16;
  constexpr int SEGS = STEPS / SPG;
  constexpr int U = kConsumerWarps * UPW;
  extern __shared__ __align__(128) unsigned char smem[];
  auto* xs = reinterpret_cast<__nv_bfloat16*>(smem);
  unsigned char* ring = smem + p.ring_offset;
  auto* reduce = reinterpret_cast<float*>(smem + p.reduce_offset);
  auto* full = reinterpret_cast<uint64_t*>(smem + p.barrier_offset);
  __shared__ float x_scale[kMaxM];
  uint64_t* empty = full + p.stages;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < p.stages; ++s) {
      barrier_init(full + s, 1);
      barrier_init(empty + s, kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == kConsumerWarps) {
    // Producer. Weights are constant, so it may run ahead of the kernel that writes x
    // (programmatic launch); it touches nothing else in global memory.
    if (lane != 0) return;
    int slot = 0, phase = 0, filled = 0;
    for (int pair = blockIdx.x; pair < p.pairs; pair += gridDim.x) {
      const int tile_a = 2 * pair;
      const int tiles = tile_a + 1 < p.n_tiles ? 2 : 1;
      for (int chunk = 0; chunk < p.chunks; ++chunk) {
        // Every slot's first fill needs no wait; later fills wait for the consumers' release of
        // the previous fill (phase parity flips each time the ring wraps).
        if (filled < p.stages) {
          ++filled;
        } else {
          barrier_wait(empty + slot, phase ^ 1);
        }
        unsigned char* stage = ring + size_t(slot) * p.stage_bytes;
        const int u0 = chunk * U, n = min(U, p.k_units - u0);
        const int g_first = group_of<SEGS>(p, u0, 0);
        const int g_last = group_of<SEGS>(p, u0 + n - 1, SEGS - 1);
        const uint32_t code_bytes = uint32_t(n) * kUnitBytes;
        const uint32_t scale_bytes = uint32_t(g_last - g_first + 1) * 8u * uint32_t(p.scale_bytes);
        // Zero rows are 8 bytes: each tile's copy is the 16-byte-aligned span around them (the
        // buffer is padded for the last one).
        size_t zero_begin[2] = {0, 0};
        uint32_t zero_bytes[2] = {0, 0};
        if (p.zeros != nullptr) {
          for (int t = 0; t < tiles; ++t) {
            const size_t row = size_t(tile_a + t) * p.n_groups + g_first;
            zero_begin[t] = (row * 8) & ~size_t(15);
            zero_bytes[t] =
                uint32_t(((row + (g_last - g_first) + 1) * 8 + 15) / 16 * 16 - zero_begin[t]);
          }
        }
        barrier_expect_bytes(full + slot, uint32_t(tiles) * (code_bytes + scale_bytes) +
                                              zero_bytes[0] + zero_bytes[1]);
        for (int t = 0; t < tiles; ++t) {
          const size_t tile = size_t(tile_a + t);
          bulk_copy(stage + t * U * kUnitBytes, p.codes + (tile * p.k_units + u0) * kUnitBytes,
                    code_bytes, full + slot);
          bulk_copy(stage + 2 * U * kUnitBytes + t * p.scale_area,
                    p.scales + (tile * p.n_groups + g_first) * 8 * p.scale_bytes, scale_bytes,
                    full + slot);
          if (p.zeros != nullptr) {
            bulk_copy(stage + 2 * U * kUnitBytes + 2 * p.scale_area + t * p.zero_area,
                      p.zeros + zero_begin[t], zero_bytes[t], full + slot);
          }
        }
        if (++slot == p.stages) {
          slot = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  // Consumers: stage all of x once (every pair uses all of it).
  wait_for_prerequisite_grid();
  stage_input<kUnitCols, FP8>(p, xs, reduce, x_scale);
  consumers_sync();
  allow_dependent_launch();

  const int g = lane / 4, t4 = lane % 4;
  const bool live_row = g < p.m;
  const uint4* x_lane = reinterpret_cast<const uint4*>(xs + (live_row ? g : 0) * p.x_stride) + t4;
  int slot = 0, phase = 0, pair_count = 0;
  for (int pair = blockIdx.x; pair < p.pairs; pair += gridDim.x, ++pair_count) {
    const int tile_a = 2 * pair;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int chunk = 0; chunk < p.chunks; ++chunk) {
      barrier_wait(full + slot, phase);
      const unsigned char* stage = ring + size_t(slot) * p.stage_bytes;
      const int u0 = chunk * U, n = min(U, p.k_units - u0);
      const int g_first = group_of<SEGS>(p, u0, 0);
      const unsigned char* scales_a = stage + 2 * U * kUnitBytes;
      const unsigned char* scales_b = scales_a + p.scale_area;
      const unsigned char* zeros_a = scales_a + 2 * p.scale_area;
      const unsigned char* zeros_b = zeros_a + p.zero_area;
      // Where the first zero row sits in each tile's aligned span.
      const int zero_skip_a = int(((size_t(tile_a) * p.n_groups + g_first) * 8) & 15);
      const int zero_skip_b = int(((size_t(tile_a + 1) * p.n_groups + g_first) * 8) & 15);
      static_for<UPW>([&](auto j_constant) {
        constexpr int j = decltype(j_constant)::value;
        const int i = warp + j * kConsumerWarps;
        // A unit past the chunk's end re-reads unit 0 with zero scales (no branch, so the
        // units' mma chains interleave).
        const bool live = i < n;
        const int iu = live ? i : 0;
        const uint4 qa = load_shared16(stage + iu * kUnitBytes + lane * 16);
        const uint4 qb = load_shared16(stage + (U + iu) * kUnitBytes + lane * 16);
        uint4 xf[STEPS / 2];
#pragma unroll
        for (int c = 0; c < STEPS / 2; ++c) {
          xf[c] = live_row ? x_lane[(u0 + iu) * (kUnitCols / 8) + c * 4] : make_uint4(0, 0, 0, 0);
        }
        static_for<SEGS>([&](auto seg_constant) {
          constexpr int seg = decltype(seg_constant)::value;
          const int row = group_of<SEGS>(p, u0 + iu, seg) - g_first;
          const float sa = live ? load_scale(scales_a, p.scale_type, row * 8 + g) : 0.0f;
          const float sb = live ? load_scale(scales_b, p.scale_type, row * 8 + g) : 0.0f;
          float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if constexpr (FP8) {
            // e4m3 weights × e4m3 activations, both exact in f16.
            static_for<SPG>([&](auto step_constant) {
              constexpr int S = seg * SPG + decltype(step_constant)::value;
              const uint32_t wa = word_of<S>(qa), wb = word_of<S>(qb);
              const uint32_t a[4] = {e4m3x2_to_f16x2(wa), e4m3x2_to_f16x2(wb),
                                     e4m3x2_to_f16x2(wa >> 16), e4m3x2_to_f16x2(wb >> 16)};
              const uint4& chunk_x = xf[S / 2];
              mma_f16_16816(part, a, S % 2 == 0 ? chunk_x.x : chunk_x.z,
                            S % 2 == 0 ? chunk_x.y : chunk_x.w);
            });
          } else {
            const int z_a =
                p.zeros != nullptr ? zeros_a[zero_skip_a + row * 8 + g] : p.symmetric_zero;
            const int z_b =
                p.zeros != nullptr ? zeros_b[zero_skip_b + row * 8 + g] : p.symmetric_zero;
            const uint32_t za = zero_word<BITS>(z_a), zb = zero_word<BITS>(z_b);
            static_for<SPG>([&](auto step_constant) {
              constexpr int S = seg * SPG + decltype(step_constant)::value;
              uint32_t a[4];
              b_fragment<BITS, S>(qa, za, a[0], a[2]);
              b_fragment<BITS, S>(qb, zb, a[1], a[3]);
              const uint4& chunk_x = xf[S / 2];
              mma_bf16_16816(part, a, S % 2 == 0 ? chunk_x.x : chunk_x.z,
                             S % 2 == 0 ? chunk_x.y : chunk_x.w);
            });
          }
          acc[0] += part[0] * sa;
          acc[1] += part[1] * sa;
          acc[2] += part[2] * sb;
          acc[3] += part[3] * sb;
        });
      });
      __syncwarp();
      if (lane == 0) barrier_arrive(empty + slot);
      if (++slot == p.stages) {
        slot = 0;
        phase ^= 1;
      }
    }
    // The pair is done: add the warps' partial sums in warp order (buffers alternate by pair, so
    // the next pair's stores cannot overwrite a buffer still being read).
    float* buffer = reduce + (pair_count & 1) * kReduceFloats;
    *reinterpret_cast<float4*>(buffer + (warp * 32 + lane) * 4) =
        make_float4(acc[0], acc[1], acc[2], acc[3]);
    consumers_sync();
    if (warp == pair_count % kConsumerWarps) {
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) {
        const float4 v = *reinterpret_cast<const float4*>(buffer + (w * 32 + lane) * 4);
        sum[0] += v.x;
        sum[1] += v.y;
        sum[2] += v.z;
        sum[3] += v.w;
      }
      // C fragment: c0, c1 = feature 8·tile_a + g, batch rows 2·t4, 2·t4 + 1; c2, c3 = tile b.
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int batch_row = 2 * t4 + (e & 1);
        const int tile = tile_a + (e < 2 ? 0 : 1);
        const int col = tile * 8 + g;
        if (batch_row < p.m && tile < p.n_tiles && col < p.n) {
          const float value = FP8 ? sum[e] * x_scale[batch_row] : sum[e];
          p.y[size_t(batch_row) * p.n + col] = __float2bfloat16(value);
        }
      }
    }
  }
#endif
}

// Shared-memory plan of one launch; stages == 0 when it does not fit.
struct BulkPlan {
  int units_per_warp = 0;
  int stages = 0;
  int stage_bytes = 0;
  int scale_area = 0;
  int zero_area = 0;
  int x_stride = 0;
  int ring_offset = 0;
  int reduce_offset = 0;
  int barrier_offset = 0;
  int smem = 0;
};

int round_up(int v, int to) { return (v + to - 1) / to * to; }

BulkPlan plan_for(const WxA16Weight& w, int64_t m) {
  const WxA16GemvTuning& tuning = wxa16_gemv_tuning();
  BulkPlan plan;
  plan.units_per_warp = tuning.bulk_units_per_warp;
  const int u = kConsumerWarps * plan.units_per_warp;
  const int unit_cols = w.unit_cols();
  const int segs = w.group_size >= unit_cols ? 1 : int(unit_cols / w.group_size);
  // Group rows a chunk can touch: one per unit segment, or ⌈U / units_per_group⌉ + 1.
  const int rows = u * segs + 1;
  const int scale_bytes = w.scale_type == WxA16ScaleType::F32 ? 4 : 2;
  plan.scale_area = round_up(rows * 8 * scale_bytes, 16);
  plan.zero_area = w.zeros.bytes() > 0 ? round_up(rows * 8 + 16, 16) : 0;
  plan.stage_bytes = round_up(2 * u * kUnitBytes + 2 * plan.scale_area + 2 * plan.zero_area, 128);
  plan.x_stride = int(w.padded_cols()) + kStagedRowPad;
  plan.ring_offset = round_up(int(m) * plan.x_stride * 2, 128);
  const int fixed = plan.ring_offset + kReduceBytes;
  // 1 KB per CTA is the runtime's; the rest is split between the CTAs an SM should hold.
  const DeviceProperties& limits = device_properties();
  const int ctas_per_sm = std::max(1, tuning.bulk_ctas_per_sm);
  const int budget =
      std::min(limits.max_smem_optin, limits.max_smem_per_sm / ctas_per_sm - 1024) - 256;
  int stages = tuning.bulk_stages;
  while (stages >= 2 && fixed + stages * (plan.stage_bytes + 16) > budget) --stages;
  if (stages < 2) return plan;
  plan.stages = stages;
  plan.reduce_offset = plan.ring_offset + stages * plan.stage_bytes;
  plan.barrier_offset = plan.reduce_offset + kReduceBytes;
  plan.smem = plan.barrier_offset + 2 * stages * 8;
  return plan;
}

template <int BITS, bool FP8, int SPG, int UPW>
void launch(const BulkParams& p, int ctas, int smem, cudaStream_t stream) {
  auto* kernel = wxa16_bulk_gemv_kernel<BITS, FP8, SPG, UPW>;
  static bool configured = false;
  if (!configured) {
    // Static shared memory (the fp8 variant's scales) counts against the same opt-in limit.
    cudaFuncAttributes attributes{};
    NIBBLE_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    NIBBLE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             device_properties().max_smem_optin - int(attributes.sharedSizeBytes)));
    configured = true;
  }
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(ctas), 1, 1);
  config.blockDim = dim3(kThreads, 1, 1);
  config.dynamicSmemBytes = size_t(smem);
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = wxa16_gemv_tuning().programmatic_launch ? 1 : 0;
  NIBBLE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p));
}

template <int BITS, int SPG, bool FP8 = false>
void launch_for_width(const BulkParams& p, int upw, int ctas, int smem, cudaStream_t stream) {
  if (upw == 1) return launch<BITS, FP8, SPG, 1>(p, ctas, smem, stream);
  if (upw == 4) return launch<BITS, FP8, SPG, 4>(p, ctas, smem, stream);
  launch<BITS, FP8, SPG, 2>(p, ctas, smem, stream);
}

}  // namespace

bool wxa16_bulk_gemv_supports(const WxA16Weight& w, int64_t m) {
  const int upw = wxa16_gemv_tuning().bulk_units_per_warp;
  const bool groups_fit =
      w.group_size >= w.unit_cols() || (w.group_size >= 32 && w.unit_cols() % w.group_size == 0);
  // e4m3 codes: no zeros, groups spanning whole units (one f16 conversion path).
  const bool fp8_fits = !w.fp8 || (w.bits == 8 && w.zeros.bytes() == 0 && w.group_size >= 64);
  return device_properties().major >= 9 && (w.bits == 4 || w.bits == 8) && groups_fit && fp8_fits &&
         m >= 1 && m <= kMaxM && (upw == 1 || upw == 2 || upw == 4) &&
         w.n_tiles < (int64_t(1) << 30) && w.n_tiles * w.n_groups * 8 < (int64_t(1) << 31) &&
         plan_for(w, m).stages > 0;
}

bool wxa16_bulk_gemv_fuses(const WxA16Weight& w, int64_t m) {
  return wxa16_bulk_gemv_supports(w, m) && w.cols % 8 == 0 && w.input_perm.bytes() == 0;
}

void wxa16_bulk_gemv(const WxA16Weight& w, const void* x, int64_t m, void* y, cudaStream_t stream) {
  WxA16Input input;
  input.x = x;
  wxa16_bulk_gemv(w, input, m, y, stream);
}

void wxa16_bulk_gemv(const WxA16Weight& w, const WxA16Input& input, int64_t m, void* y,
                     cudaStream_t stream) {
  NIBBLE_CHECK(wxa16_bulk_gemv_supports(w, m),
               "wxa16_bulk_gemv: {}-bit weight [{}, {}] with M = {} (needs sm_90, M ≤ {})", w.bits,
               w.rows, w.cols, m, kMaxM);
  NIBBLE_CHECK(
      w.input_perm.bytes() == 0 || (input.kind == WxA16Input::Kind::Plain && input.permuted),
      "wxa16_bulk_gemv: an act-order weight [{}, {}] needs x gathered into its column "
      "order first (wxa16_permuted_input; wxa16_linear does it)",
      w.rows, w.cols);
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (input.kind != WxA16Input::Kind::Plain) {
    NIBBLE_CHECK(wxa16_bulk_gemv_fuses(w, m) && aligned(input.x) && aligned(input.delta) &&
                     aligned(input.norm_weight) && aligned(input.residual_out),
                 "wxa16_bulk_gemv: a fused input needs K ({}) a multiple of 8 and 16-byte aligned "
                 "rows",
                 w.cols);
    NIBBLE_CHECK(input.kind != WxA16Input::Kind::ResidualRmsNorm ||
                     (input.norm_weight != nullptr && input.residual_out != input.x),
                 "wxa16_bulk_gemv: RMSNorm input needs a weight and a residual_out other than x");
  }
  const BulkPlan plan = plan_for(w, m);
  const int u = kConsumerWarps * plan.units_per_warp;
  BulkParams p{};
  p.codes = w.codes.get<const unsigned char>();
  p.scales = w.scales.get<const unsigned char>();
  p.zeros = w.zeros.bytes() > 0 ? w.zeros.get<const unsigned char>() : nullptr;
  p.scale_bytes = w.scale_type == WxA16ScaleType::F32 ? 4 : 2;
  p.scale_type = int(w.scale_type);
  p.symmetric_zero = w.symmetric_zero;
  p.n_groups = int(w.n_groups);
  p.units_per_group = w.group_size >= w.unit_cols() ? int(w.group_size / w.unit_cols()) : 0;
  p.group_shift = -1;
  for (int shift = 0; shift < 30; ++shift) {
    if (p.units_per_group == (1 << shift)) p.group_shift = shift;
  }
  p.x = static_cast<const __nv_bfloat16*>(input.x);
  p.input_kind = int(input.kind);
  p.delta = static_cast<const __nv_bfloat16*>(input.delta);
  p.norm_weight = static_cast<const __nv_bfloat16*>(input.norm_weight);
  p.residual_out = static_cast<__nv_bfloat16*>(input.residual_out);
  p.eps = input.eps;
  p.m = int(m);
  p.k = int(w.cols);
  p.x_vector = w.cols % 8 == 0 && aligned(input.x);
  p.k_units = int(w.k_units);
  p.n_tiles = int(w.n_tiles);
  p.n = int(w.rows);
  p.y = static_cast<__nv_bfloat16*>(y);
  p.pairs = int((w.n_tiles + 1) / 2);
  p.chunks = int((w.k_units + u - 1) / u);
  p.stages = plan.stages;
  p.stage_bytes = plan.stage_bytes;
  p.scale_area = plan.scale_area;
  p.zero_area = plan.zero_area;
  p.x_stride = plan.x_stride;
  p.ring_offset = plan.ring_offset;
  p.reduce_offset = plan.reduce_offset;
  p.barrier_offset = plan.barrier_offset;
  const int ctas = int(std::min<int64_t>(
      p.pairs, int64_t(device_properties().sm_count) * wxa16_gemv_tuning().bulk_ctas_per_sm));
  const int spg = int(std::min<int64_t>(w.unit_cols(), w.group_size) / 16);
  const int upw = plan.units_per_warp;
  if (w.fp8) return launch_for_width<8, 4, true>(p, upw, ctas, plan.smem, stream);
  if (w.bits == 8) {
    if (spg == 2) return launch_for_width<8, 2>(p, upw, ctas, plan.smem, stream);
    return launch_for_width<8, 4>(p, upw, ctas, plan.smem, stream);
  }
  if (spg == 2) return launch_for_width<4, 2>(p, upw, ctas, plan.smem, stream);
  if (spg == 4) return launch_for_width<4, 4>(p, upw, ctas, plan.smem, stream);
  launch_for_width<4, 8>(p, upw, ctas, plan.smem, stream);
}

}  // namespace nibble::cuda
