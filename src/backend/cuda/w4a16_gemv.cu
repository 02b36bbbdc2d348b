// The W4A16 / W8A16 decode kernel (M ≤ 16): a register-streaming GEMV on the repacked layout
// of wxa16_linear.h, with the weight as the tensor cores' A operand and the activations as B.
// A unit is 512 bytes either way: 8 rows × 128 columns of 4-bit codes (8 mma steps of 16
// columns) or 8 rows × 64 columns of 8-bit codes (4 steps); only the decoding of a lane's 16
// bytes into A fragments (b_fragment) and the unit width differ.
//
// Why a second kernel next to the streaming one: at batch 1 the streaming kernel pads M to 16
// rows of x in shared memory (128 KB of zeros per CTA at K = 4096, one CTA per SM) and ran
// 112 CTAs on 132 SMs for 4096×28672. Here:
//  - a warp owns two 8-row tiles (16 output features: one m16 A fragment, so one mma per 16
//    columns covers 8 batch rows instead of 1 of 16) and a K range; it issues BATCH units of
//    both tiles (16-byte loads, 512 coalesced bytes per warp each) plus their scales before it
//    uses any of them, so every warp keeps BATCH KB in flight with no shared-memory ring;
//  - only the real rows of x are staged, permuted so that a lane's B fragments of a whole unit
//    are 64 contiguous bytes (4 × 16-byte shared loads, conflict-free across the warp);
//  - split-K fills the SMs `ctas_per_sm` times over; each split writes its partial sums to its
//    own workspace slice and the last CTA of a column block adds them in split order
//    (deterministic: bit-identical results run to run).
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/device_properties.h"
#include "backend/cuda/programmatic_launch.cuh"
#include "backend/cuda/wxa16_device.cuh"
#include "backend/cuda/wxa16_linear.h"

namespace nibble::cuda {
namespace {

using namespace wxa16_detail;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kColsPerBlock = kWarps * 16;
template <int BITS>
constexpr int kUnitColsOf = BITS == 4 ? 128 : 64;
// x slice budget per CTA: small enough for several CTAs per SM.
constexpr int kXSmemBytes = 48 * 1024;
constexpr int kRowPad = kStagedRowPad;

struct GemvParams {
  const uint4* codes;
  const void* scales;
  const uint8_t* zeros;
  int scale_type;
  int symmetric_zero;
  int n_groups;
  int units_per_group;  // group_size / 128 when a group spans whole units, else 0
  const __nv_bfloat16* x;
  int m;
  int k;
  bool x_vector;
  int k_units;
  int n_tiles;
  int n;
  __nv_bfloat16* y;
  float* partial;
  int partial_ld;
  int* counters;
  int units_per_split;
  int splits;
};

// Weights are read once: no L1 allocation.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                          uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int BITS, int MB, int BATCH, int SPG>
__global__ void __launch_bounds__(kThreads) wxa16_gemv_kernel(GemvParams p) {
  constexpr int kUnitCols = kUnitColsOf<BITS>;
  constexpr int STEPS = kUnitCols / 16;  // mma steps per unit
  constexpr int SEGS = STEPS / SPG;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* xs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __shared__ int is_last_block;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int tile_a = (blockIdx.x * kWarps + warp) * 2, tile_b = tile_a + 1;
  const bool valid_a = tile_a < p.n_tiles, valid_b = tile_b < p.n_tiles;
  const int u_begin = blockIdx.y * p.units_per_split;
  const int u_end = min(u_begin + p.units_per_split, p.k_units);
  const int stride = p.units_per_split * kUnitCols + kRowPad;

  const uint4* code_a = p.codes + size_t(valid_a ? tile_a : 0) * p.k_units * 32 + lane;
  const uint4* code_b = p.codes + size_t(valid_b ? tile_b : 0) * p.k_units * 32 + lane;
  const int meta_a = (valid_a ? tile_a : 0) * p.n_groups * 8 + g;
  const int meta_b = (valid_b ? tile_b : 0) * p.n_groups * 8 + g;

  uint4 qa[BATCH], qb[BATCH];
  float sa[BATCH][SEGS], sb[BATCH][SEGS];
  uint32_t za[BATCH][SEGS], zb[BATCH][SEGS];
  // Issues the loads of units u0 .. u0 + BATCH - 1 (codes, scales, zeros of both tiles).
  auto issue = [&](int u0) {
#pragma unroll
    for (int b = 0; b < BATCH; ++b) {
      const int u = u0 + b;
      const bool live = u < u_end;
      qa[b] = live && valid_a ? load_streaming(code_a + u * 32) : make_uint4(0, 0, 0, 0);
      qb[b] = live && valid_b ? load_streaming(code_b + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int seg = 0; seg < SEGS; ++seg) {
        const int group =
            min(p.units_per_group > 0 ? u / p.units_per_group : u * SEGS + seg, p.n_groups - 1);
        sa[b][seg] = live && valid_a ? load_scale(p.scales, p.scale_type, meta_a + group * 8) : 0.f;
        sb[b][seg] = live && valid_b ? load_scale(p.scales, p.scale_type, meta_b + group * 8) : 0.f;
        int z_a = p.symmetric_zero, z_b = p.symmetric_zero;
        if (p.zeros != nullptr) {
          if (live && valid_a) z_a = __ldg(p.zeros + meta_a + group * 8);
          if (live && valid_b) z_b = __ldg(p.zeros + meta_b + group * 8);
        }
        za[b][seg] = zero_word<BITS>(z_a);
        zb[b][seg] = zero_word<BITS>(z_b);
      }
    }
  };
  // The first batch is in flight while x is staged. Weights are constant: they may be read
  // before the kernel that writes x has finished (programmatic launch); nothing else may.
  issue(u_begin);
  wait_for_prerequisite_grid();

  const int k0 = u_begin * kUnitCols;
  const int slice_cols = (u_end - u_begin) * kUnitCols;
  stage_x_permuted<kUnitCols>(xs, stride, p.x, p.m, p.k, k0, slice_cols, p.x_vector, threadIdx.x,
                              kThreads);
  __syncthreads();

  float acc[MB][4];
#pragma unroll
  for (int nb = 0; nb < MB; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nb][e] = 0.0f;

  bool live_row[MB];
  const uint4* x_lane[MB];
#pragma unroll
  for (int nb = 0; nb < MB; ++nb) {
    live_row[nb] = nb * 8 + g < p.m;
    x_lane[nb] = reinterpret_cast<const uint4*>(xs + (live_row[nb] ? nb * 8 + g : 0) * stride) + t4;
  }

  for (int u0 = u_begin; u0 < u_end; u0 += BATCH) {
#pragma unroll
    for (int b = 0; b < BATCH; ++b) {
      const int u = u0 + b;
      if (u >= u_end) break;
      uint4 xf[MB][STEPS / 2];
#pragma unroll
      for (int nb = 0; nb < MB; ++nb)
#pragma unroll
        for (int c = 0; c < STEPS / 2; ++c) {
          xf[nb][c] = live_row[nb] ? x_lane[nb][(u - u_begin) * (kUnitCols / 8) + c * 4]
                                   : make_uint4(0, 0, 0, 0);
        }
      static_for<SEGS>([&](auto seg_constant) {
        constexpr int seg = decltype(seg_constant)::value;
        float part[MB][4];
#pragma unroll
        for (int nb = 0; nb < MB; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[nb][e] = 0.0f;
        static_for<SPG>([&](auto step_constant) {
          constexpr int S = seg * SPG + decltype(step_constant)::value;
          uint32_t a0, a1, a2, a3;
          b_fragment<BITS, S>(qa[b], za[b][seg], a0, a2);
          b_fragment<BITS, S>(qb[b], zb[b][seg], a1, a3);
#pragma unroll
          for (int nb = 0; nb < MB; ++nb) {
            const uint4& chunk = xf[nb][S / 2];
            const uint32_t b0 = S % 2 == 0 ? chunk.x : chunk.z;
            const uint32_t b1 = S % 2 == 0 ? chunk.y : chunk.w;
            mma_16816(part[nb], a0, a1, a2, a3, b0, b1);
          }
        });
#pragma unroll
        for (int nb = 0; nb < MB; ++nb) {
          acc[nb][0] += part[nb][0] * sa[b][seg];
          acc[nb][1] += part[nb][1] * sa[b][seg];
          acc[nb][2] += part[nb][2] * sb[b][seg];
          acc[nb][3] += part[nb][3] * sb[b][seg];
        }
      });
    }
    if (u0 + BATCH < u_end) issue(u0 + BATCH);
  }

  // C fragment: c0, c1 = feature 8·tile_a + g, batch rows 2·t4, 2·t4 + 1; c2, c3 = tile_b.
  if (p.splits == 1) {
#pragma unroll
    for (int nb = 0; nb < MB; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = nb * 8 + 2 * t4 + (e & 1);
        const bool valid = e < 2 ? valid_a : valid_b;
        const int col = (e < 2 ? tile_a : tile_b) * 8 + g;
        if (valid && row < p.m && col < p.n) {
          p.y[size_t(row) * p.n + col] = __float2bfloat16(acc[nb][e]);
        }
      }
    }
    return;
  }
  // Split-K: this split's partial sums go to its own slice of the workspace (plain stores);
  // the last CTA of the column block adds the slices in split order, so the result does not
  // depend on which CTA finishes first (f32 atomics summed in arrival order did, and flipped
  // near-tied greedy picks from run to run).
  float* slice = p.partial + size_t(blockIdx.y) * p.m * p.partial_ld;
#pragma unroll
  for (int nb = 0; nb < MB; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = nb * 8 + 2 * t4 + (e & 1);
      const bool valid = e < 2 ? valid_a : valid_b;
      const int col = (e < 2 ? tile_a : tile_b) * 8 + g;
      if (valid && row < p.m) __stcg(slice + size_t(row) * p.partial_ld + col, acc[nb][e]);
    }
  }
  // The last CTA of this column block (split-K semaphore) reduces the slices.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    is_last_block = atomicAdd(p.counters + blockIdx.x, 1) == p.splits - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  __threadfence();
  const int col_begin = blockIdx.x * kColsPerBlock;
  const int cols = min(kColsPerBlock, p.partial_ld - col_begin);
  if constexpr (MB == 1) {
    // One row: a cell per thread and the splits four at a time keep as many loads in flight as
    // the batched reduction, without its registers (which cost this instantiation occupancy:
    // measured 10.5 → 14.3 µs on 4096×6144 at M = 1).
    const size_t slice_elems = size_t(p.m) * p.partial_ld;
    for (int i = threadIdx.x; i < p.m * cols; i += kThreads) {
      const int row = i / cols, col = col_begin + i % cols;
      const float* cell = p.partial + size_t(row) * p.partial_ld + col;
      float sum = 0.0f;
#pragma unroll 4
      for (int s = 0; s < p.splits; ++s) sum += __ldcg(cell + s * slice_elems);
      if (col < p.n) p.y[size_t(row) * p.n + col] = __float2bfloat16(sum);
    }
  } else {
    reduce_split_slices<kThreads>(p.partial, int64_t(p.m) * p.partial_ld, p.splits, p.m,
                                  p.partial_ld, col_begin, cols, p.y, p.n);
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
}

int sm_count() { return device_properties().sm_count; }

bool programmatic_launch_supported() { return device_properties().major >= 9; }

template <int BITS, int MB, int BATCH, int SPG>
void launch(const GemvParams& p, dim3 grid, int smem, cudaStream_t stream) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(kThreads, 1, 1);
  config.dynamicSmemBytes = size_t(smem);
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs =
      wxa16_gemv_tuning().programmatic_launch && programmatic_launch_supported() ? 1 : 0;
  NIBBLE_CUDA_CHECK(cudaLaunchKernelEx(&config, wxa16_gemv_kernel<BITS, MB, BATCH, SPG>, p));
}

template <int MB, int BATCH>
void launch_for_group(const GemvParams& p, int bits, int spg, dim3 grid, int smem,
                      cudaStream_t stream) {
  if (bits == 8) {
    // 8-bit units are 4 steps wide: a group of ≥ 64 columns is one segment per unit.
    if (spg == 2) return launch<8, MB, BATCH, 2>(p, grid, smem, stream);
    return launch<8, MB, BATCH, 4>(p, grid, smem, stream);
  }
  if (spg == 2) return launch<4, MB, BATCH, 2>(p, grid, smem, stream);
  if (spg == 4) return launch<4, MB, BATCH, 4>(p, grid, smem, stream);
  launch<4, MB, BATCH, 8>(p, grid, smem, stream);
}

}  // namespace

WxA16GemvTuning& wxa16_gemv_tuning() {
  static WxA16GemvTuning tuning;
  return tuning;
}

bool wxa16_gemv_supports(const WxA16Weight& w, int64_t m) {
  // Groups narrower than a unit must split it into segments of at least two mma steps.
  const bool groups_fit =
      w.group_size >= w.unit_cols() || (w.group_size >= 32 && w.unit_cols() % w.group_size == 0);
  return !w.fp8 && (w.bits == 4 || w.bits == 8) && groups_fit && m >= 1 && m <= kWxA16GemvMaxM &&
         w.n_tiles * 8 < (int64_t(1) << 30) && w.padded_cols() < (int64_t(1) << 30) &&
         w.n_tiles * w.n_groups * 8 < (int64_t(1) << 31);
}

bool wxa16_gemv_preferred(const WxA16Weight& w, int64_t m) {
  return wxa16_gemv_supports(w, m) && w.group_size >= w.unit_cols();
}

void w4a16_gemv(const WxA16Weight& w, const void* x, int64_t m, void* y, WxA16Workspace& ws,
                cudaStream_t stream) {
  NIBBLE_CHECK(wxa16_gemv_supports(w, m), "w4a16_gemv: {}-bit weight [{}, {}] with M = {}", w.bits,
               w.rows, w.cols, m);
  x = wxa16_permuted_input(w, x, m, ws, stream);
  const WxA16GemvTuning& tuning = wxa16_gemv_tuning();
  const int64_t kUnitCols = w.unit_cols();
  const int64_t pairs = (w.n_tiles + 1) / 2;
  const int64_t col_blocks = (pairs + kWarps - 1) / kWarps;
  // The x slice bounds the units per split; beyond that, split until the grid fills the SMs
  // `ctas_per_sm` times over (bandwidth needs bytes in flight on every SM, and the split-K
  // partial sums are small next to the weight stream).
  const int64_t max_units = std::max<int64_t>(1, (kXSmemBytes / (m * 2) - kRowPad) / kUnitCols);
  const int64_t min_splits = (w.k_units + max_units - 1) / max_units;
  const int64_t target_ctas = int64_t(sm_count()) * tuning.ctas_per_sm;
  int64_t wanted = std::max(min_splits, (target_ctas + col_blocks - 1) / col_blocks);
  if (tuning.max_units_per_split > 0) {
    // Short splits keep more loads in flight per SM; the cap on CTAs leaves lm_head-sized
    // weights (1000 column blocks) unsplit, where a second split measured slower.
    const int64_t by_units =
        std::min(kWxA16GemvUnitSplits,
                 (w.k_units + tuning.max_units_per_split - 1) / tuning.max_units_per_split);
    const int64_t cta_cap = std::max<int64_t>(1, 8 * int64_t(sm_count()) / col_blocks);
    wanted = std::max(wanted, std::min(by_units, cta_cap));
  }
  const int64_t splits_wanted = std::min(wanted, w.k_units);
  const int64_t units = (w.k_units + splits_wanted - 1) / splits_wanted;
  const int64_t splits = (w.k_units + units - 1) / units;

  GemvParams p{};
  p.codes = w.codes.get<const uint4>();
  p.scales = w.scales.get();
  p.zeros = w.zeros.bytes() > 0 ? w.zeros.get<const uint8_t>() : nullptr;
  p.scale_type = int(w.scale_type);
  p.symmetric_zero = w.symmetric_zero;
  p.n_groups = int(w.n_groups);
  p.units_per_group = w.group_size >= kUnitCols ? int(w.group_size / kUnitCols) : 0;
  p.x = static_cast<const __nv_bfloat16*>(x);
  p.m = int(m);
  p.k = int(w.cols);
  p.x_vector = w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  p.k_units = int(w.k_units);
  p.n_tiles = int(w.n_tiles);
  p.n = int(w.rows);
  p.y = static_cast<__nv_bfloat16*>(y);
  p.partial_ld = int(w.n_tiles * 8);
  p.units_per_split = int(units);
  p.splits = int(splits);
  if (splits > 1) {
    ws.partial_sums.ensure(size_t(splits) * size_t(m) * size_t(p.partial_ld) * sizeof(float));
    // Fresh counters are zeroed once; the kernels leave them zero after every call.
    if (ws.counters.ensure(size_t(col_blocks) * sizeof(int))) {
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(ws.counters.get(), 0, ws.counters.bytes(), stream));
    }
    p.partial = ws.partial_sums.get<float>();
    p.counters = ws.counters.get<int>();
  }
  const dim3 grid{unsigned(col_blocks), unsigned(splits), 1u};
  const int smem = int(m) * (int(units) * kUnitCols + kRowPad) * 2;
  const int spg = int(std::min<int64_t>(kUnitCols, w.group_size) / 16);
  const bool wide = tuning.batch_units >= 8;
  if (m <= 8) {
    if (wide) return launch_for_group<1, 8>(p, w.bits, spg, grid, smem, stream);
    return launch_for_group<1, 4>(p, w.bits, spg, grid, smem, stream);
  }
  if (wide) return launch_for_group<2, 8>(p, w.bits, spg, grid, smem, stream);
  launch_for_group<2, 4>(p, w.bits, spg, grid, smem, stream);
}

}  // namespace nibble::cuda
