// The W4A16 / W8A16 kernels (see wxa16_linear.h for the layout and the two paths).
#include <cuda_bf16.h>

#include <algorithm>
#include <utility>

#include "backend/cuda/device_properties.h"
#include "backend/cuda/wxa16_device.cuh"
#include "backend/cuda/wxa16_linear.h"

namespace nibble::cuda {
namespace {

using namespace wxa16_detail;

constexpr int kThreads = 256;       // 8 warps
constexpr int kTilesPerWarp = 4;    // 32 output columns per warp: one x fragment feeds 4 mmas
constexpr int kTilesPerBlock = 32;  // 256 output columns per CTA share one x slice in smem
constexpr int kMaxPassRows = 64;    // 4 m-tiles of 16 per pass over the weight
constexpr int kStages = 4;          // codes ring: 3 units in flight per warp while one is used
constexpr int kCodeRingBytes = kThreads / 32 * kStages * kTilesPerWarp * 512;
// Scales and zeros travel in rings of their own, a unit ahead like the codes: read straight from
// global memory, each unit's scale load exposed a full DRAM latency (measured: 0.9 TB/s).
constexpr int kScaleSlotWords = 32;  // ≤ 4 groups × 8 rows × 4 bytes
constexpr int kZeroSlotWords = 8;    // ≤ 4 groups × 8 rows × 1 byte
constexpr int kScaleRingBytes = kThreads / 32 * kStages * kTilesPerWarp * kScaleSlotWords * 4;
constexpr int kZeroRingBytes = kThreads / 32 * kStages * kTilesPerWarp * kZeroSlotWords * 4;
constexpr int kRingBytes = kCodeRingBytes + kScaleRingBytes + kZeroRingBytes;
constexpr int kMaxSmemBytes = 220 * 1024;  // under Hopper's 227 KB opt-in, static smem included
constexpr int kSmemPerSm = 228 * 1024;

struct StreamParams {
  const uint4* codes;
  const void* scales;
  const uint8_t* zeros;
  int scale_type;  // WxA16ScaleType
  int symmetric_zero;
  int64_t n_groups;
  int64_t group_size;
  const __nv_bfloat16* x;
  int m;          // rows of x in this pass (≤ 64)
  int64_t k;      // real K (x row length)
  bool x_vector;  // x rows can be read 16 bytes at a time
  int64_t k_units;
  int64_t n_tiles;
  int64_t n;  // real N (y row length)
  __nv_bfloat16* y;
  float* partial;  // [64][partial_ld]
  int64_t partial_ld;
  int* counters;  // per column block
  int units_per_split;
  int splits;
  int units_per_group;  // group_size / KU when a group spans whole units, else 0
  int n_groups_int;
};

// Weights are read exactly once: cp.async.cg (wxa16_device.cuh) bypasses L1, and lands in a
// per-lane shared-memory slot that only the same lane reads back, so no barrier is needed (a
// register double buffer measured 1.2 TB/s: the copy from the prefetch registers stalled every
// iteration on its load).
__device__ __forceinline__ int warp_ring_offset() {
  return int(threadIdx.x / 32) * kStages * kTilesPerWarp * 32;
}

template <int BITS, int SPG, int MT>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 2 : 1) wxa16_stream_kernel(StreamParams p) {
  constexpr int KU = BITS == 4 ? 128 : 64;
  constexpr int STEPS = KU / 16;
  constexpr int SEGS = STEPS / SPG;
  constexpr int ROWS = MT * 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint4* ring = reinterpret_cast<uint4*>(smem_raw) + warp_ring_offset();
  uint32_t* scale_ring = reinterpret_cast<uint32_t*>(smem_raw + kCodeRingBytes) +
                         (threadIdx.x / 32) * kStages * kTilesPerWarp * kScaleSlotWords;
  uint32_t* zero_ring = reinterpret_cast<uint32_t*>(smem_raw + kCodeRingBytes + kScaleRingBytes) +
                        (threadIdx.x / 32) * kStages * kTilesPerWarp * kZeroSlotWords;
  const int scale_bytes = p.scale_type == int(WxA16ScaleType::F32) ? 4 : 2;
  const int scale_words = SEGS * 8 * scale_bytes / 4;
  auto* xs = reinterpret_cast<__nv_bfloat16*>(smem_raw + kRingBytes);
  __shared__ int is_last_block;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group_row = lane / 4, t4 = lane % 4;
  const int col_block = blockIdx.x;
  const int64_t u_begin = int64_t(blockIdx.y) * p.units_per_split;
  const int64_t u_end = min(u_begin + p.units_per_split, p.k_units);
  const int slice_cols = p.units_per_split * KU;
  // +8 elements (16 bytes) per row: ldmatrix's 8 row addresses then hit 8 distinct bank groups.
  const int stride = slice_cols + 8;

  int64_t tile[kTilesPerWarp];
  bool valid[kTilesPerWarp];
#pragma unroll
  for (int j = 0; j < kTilesPerWarp; ++j) {
    tile[j] = int64_t(col_block) * kTilesPerBlock + warp * kTilesPerWarp + j;
    valid[j] = tile[j] < p.n_tiles;
  }

  // Per-tile bases once: the unit loop then needs only 32-bit offsets (64-bit divisions and
  // multiplications per unit cost more issue slots than the dequantization itself).
  const uint4* code_base[kTilesPerWarp];
  const char* scale_base[kTilesPerWarp];
  const uint8_t* zero_base[kTilesPerWarp];
#pragma unroll
  for (int j = 0; j < kTilesPerWarp; ++j) {
    const int64_t t = valid[j] ? tile[j] : 0;
    code_base[j] = p.codes + t * p.k_units * 32 + lane;
    scale_base[j] = static_cast<const char*>(p.scales) + t * p.n_groups * 8 * scale_bytes;
    zero_base[j] = p.zeros != nullptr ? p.zeros + t * p.n_groups * 8 : nullptr;
  }
  const int unit_end = int(u_end);
  // Unit u's codes for tile j go to ring slot ((u - u_begin) % kStages, j). Every call commits
  // a group (possibly empty) so that wait_group counts units.
  auto issue = [&](int u) {
    const int slot = (u - int(u_begin)) & (kStages - 1);
    // The unit's groups are consecutive in the [tile][group][8] scale table.
    const int first_group =
        min(p.units_per_group > 0 ? u / p.units_per_group : u * SEGS, p.n_groups_int - 1) * 8;
#pragma unroll
    for (int j = 0; j < kTilesPerWarp; ++j) {
      if (valid[j] && u < unit_end) {
        cp_async_16(ring + (slot * kTilesPerWarp + j) * 32 + lane, code_base[j] + u * 32);
        if (lane < scale_words) {
          cp_async_4(scale_ring + (slot * kTilesPerWarp + j) * kScaleSlotWords + lane,
                     scale_base[j] + first_group * scale_bytes + lane * 4);
        }
        if (zero_base[j] != nullptr && lane < SEGS * 2) {
          cp_async_4(zero_ring + (slot * kTilesPerWarp + j) * kZeroSlotWords + lane,
                     zero_base[j] + first_group + lane * 4);
        }
      }
    }
    cp_async_commit();
  };
  // x[:, slice] into shared memory, zero past M and past K (padding codes then multiply 0). The
  // slice is up to 64 rows × 1024 columns: loaded one vector at a time it cost each CTA a chain
  // of L2 latencies before its first mma (measured at M = 64: 0.33 TB/s), so it travels by
  // cp.async, every thread's vectors in flight at once, beside the first units' codes.
  const int64_t k0 = u_begin * KU;
  const int vectors_per_row = slice_cols / 8;
  for (int i = threadIdx.x; i < ROWS * vectors_per_row; i += kThreads) {
    const int r = i / vectors_per_row, c = (i % vectors_per_row) * 8;
    const int64_t k = k0 + c;
    __nv_bfloat16* dst = xs + r * stride + c;
    const bool inside = r < p.m && k < p.k;
    if (!inside || (p.x_vector && k + 8 <= p.k)) {
      cp_async_16_zfill(dst, inside ? p.x + int64_t(r) * p.k + k : p.x, inside ? 16 : 0);
    } else {
      const __nv_bfloat16* src = p.x + int64_t(r) * p.k + k;
      for (int j = 0; j < 8; ++j) dst[j] = k + j < p.k ? src[j] : __float2bfloat16(0.0f);
    }
  }
  cp_async_commit();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) issue(int(u_begin) + st);
  cp_async_wait<kStages - 1>();  // the x slice; the first units' codes may still be in flight
  __syncthreads();

  float acc[kTilesPerWarp][MT][4];
#pragma unroll
  for (int j = 0; j < kTilesPerWarp; ++j)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][mt][e] = 0.0f;

  for (int u = int(u_begin); u < unit_end; ++u) {
    cp_async_wait<kStages - 2>();
    __syncwarp();  // scales and zeros were copied by other lanes of the warp
    uint4 q[kTilesPerWarp];
    const int slot = (u - int(u_begin)) & (kStages - 1);
#pragma unroll
    for (int j = 0; j < kTilesPerWarp; ++j) q[j] = ring[(slot * kTilesPerWarp + j) * 32 + lane];
    const uint32_t* scale_slot = scale_ring + slot * kTilesPerWarp * kScaleSlotWords;
    const auto* zero_slot =
        reinterpret_cast<const uint8_t*>(zero_ring + slot * kTilesPerWarp * kZeroSlotWords);
    // Every lane has read this slot's scales before any lane refills the slot of unit u - 1.
    __syncwarp();
    issue(u + kStages - 1);
    const __nv_bfloat16* x_unit =
        xs + (lane % 16) * stride + int(u - u_begin) * KU + (lane / 16) * 8;
    static_for<SEGS>([&](auto seg_constant) {
      constexpr int seg = decltype(seg_constant)::value;
      uint32_t zero[kTilesPerWarp];
#pragma unroll
      for (int j = 0; j < kTilesPerWarp; ++j) {
        int z = p.symmetric_zero;
        if (p.zeros != nullptr) z = zero_slot[j * kZeroSlotWords * 4 + seg * 8 + group_row];
        zero[j] = zero_word<BITS>(z);
      }
      float part[kTilesPerWarp][MT][4];
#pragma unroll
      for (int j = 0; j < kTilesPerWarp; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[j][mt][e] = 0.0f;

      static_for<SPG>([&](auto step_constant) {
        constexpr int S = seg * SPG + decltype(step_constant)::value;
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], x_unit + mt * 16 * stride + S * 16);
#pragma unroll
        for (int j = 0; j < kTilesPerWarp; ++j) {
          uint32_t b0, b1;
          b_fragment<BITS, S>(q[j], zero[j], b0, b1);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma_bf16_16816(part[j][mt], a[mt], b0, b1);
        }
      });

#pragma unroll
      for (int j = 0; j < kTilesPerWarp; ++j) {
        float2 s = make_float2(0.0f, 0.0f);
        if (valid[j]) {
          s = load_scale_pair(scale_slot + j * kScaleSlotWords, p.scale_type, seg * 8 + 2 * t4);
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          acc[j][mt][0] += part[j][mt][0] * s.x;
          acc[j][mt][1] += part[j][mt][1] * s.y;
          acc[j][mt][2] += part[j][mt][2] * s.x;
          acc[j][mt][3] += part[j][mt][3] * s.y;
        }
      }
    });
  }

  // C fragment: rows 16·mt + group_row (+8), columns 8·tile + 2·t4 (+1).
  if (p.splits == 1) {
#pragma unroll
    for (int j = 0; j < kTilesPerWarp; ++j) {
      if (!valid[j]) continue;
      const int64_t col = tile[j] * 8 + 2 * t4;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = mt * 16 + group_row + 8 * half;
          if (row >= p.m) continue;
          __nv_bfloat16* dst = p.y + int64_t(row) * p.n + col;
          if (col < p.n) dst[0] = __float2bfloat16(acc[j][mt][2 * half]);
          if (col + 1 < p.n) dst[1] = __float2bfloat16(acc[j][mt][2 * half + 1]);
        }
      }
    }
    return;
  }

  // Split-K: each split stores its partial sums in its own workspace slice; the last CTA of the
  // column block adds the slices in split order (deterministic, unlike atomics).
  float* slice = p.partial + int64_t(blockIdx.y) * p.m * p.partial_ld;
#pragma unroll
  for (int j = 0; j < kTilesPerWarp; ++j) {
    if (!valid[j]) continue;
    const int64_t col = tile[j] * 8 + 2 * t4;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = mt * 16 + group_row + 8 * half;
        if (row < p.m) {
          __stcg(reinterpret_cast<float2*>(slice + int64_t(row) * p.partial_ld + col),
                 make_float2(acc[j][mt][2 * half], acc[j][mt][2 * half + 1]));
        }
      }
    }
  }
  // The last CTA of this column block (split-K semaphore) reduces the slices.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    is_last_block = atomicAdd(p.counters + col_block, 1) == p.splits - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  __threadfence();
  const int64_t col_begin = int64_t(col_block) * kTilesPerBlock * 8;
  const int64_t cols = min(int64_t(kTilesPerBlock * 8), p.partial_ld - col_begin);
  reduce_split_slices<kThreads>(p.partial, int64_t(p.m) * p.partial_ld, p.splits, p.m, p.partial_ld,
                                col_begin, cols, p.y, p.n);
  if (threadIdx.x == 0) p.counters[col_block] = 0;
}

template <int BITS>
__global__ void wxa16_dequantize_kernel(const uint4* codes, const void* scales, int scale_type,
                                        const uint8_t* zeros, int symmetric_zero, int64_t n_groups,
                                        int64_t group_size, int64_t n_tiles, int64_t k_units,
                                        __nv_bfloat16* out) {
  constexpr int KU = BITS == 4 ? 128 : 64;
  const int64_t unit = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (unit >= n_tiles * k_units) return;
  const int lane = threadIdx.x % 32, t4 = lane % 4;
  const int64_t tile = unit / k_units, u = unit % k_units;
  const int64_t row = tile * 8 + lane / 4;
  const int64_t padded_cols = k_units * KU;
  const uint4 q = codes[unit * 32 + lane];
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  for (int s = 0; s < KU / 16; ++s) {
    const int64_t k = u * KU + 16 * s + 2 * t4;
    const int64_t group = min(k / group_size, n_groups - 1);
    const int64_t meta = (tile * n_groups + group) * 8 + lane / 4;
    const float scale = load_scale(scales, scale_type, meta);
    const float zero = float(zeros != nullptr ? zeros[meta] : symmetric_zero);
    for (int reg = 0; reg < 2; ++reg) {
      float v[2];
      for (int e = 0; e < 2; ++e) {
        uint32_t code;
        if constexpr (BITS == 4) {
          const int j = (s % 2) * 2 + reg;
          code = (words[s / 2] >> (4 * j + 16 * e)) & 0xFu;
        } else {
          code = (words[s] >> (8 * (2 * reg + e))) & 0xFFu;
        }
        v[e] = (float(code) - zero) * scale;
      }
      *reinterpret_cast<__nv_bfloat162*>(out + row * padded_cols + k + 8 * reg) =
          __floats2bfloat162_rn(v[0], v[1]);
    }
  }
}

int sm_count() { return device_properties().sm_count; }

template <int BITS, int SPG, int MT>
void launch_stream_kernel(const StreamParams& p, dim3 grid, int smem_bytes, cudaStream_t stream) {
  static const bool configured = [] {
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(wxa16_stream_kernel<BITS, SPG, MT>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           kMaxSmemBytes));
    return true;
  }();
  (void)configured;
  wxa16_stream_kernel<BITS, SPG, MT><<<grid, kThreads, smem_bytes, stream>>>(p);
  NIBBLE_CUDA_CHECK_LAUNCH("wxa16_stream_kernel");
}

template <int BITS, int SPG>
void launch_for_rows(const StreamParams& p, dim3 grid, int smem_bytes, int mt,
                     cudaStream_t stream) {
  if (mt == 1) return launch_stream_kernel<BITS, SPG, 1>(p, grid, smem_bytes, stream);
  if (mt == 2) return launch_stream_kernel<BITS, SPG, 2>(p, grid, smem_bytes, stream);
  launch_stream_kernel<BITS, SPG, 4>(p, grid, smem_bytes, stream);
}

void stream_pass(const WxA16Weight& w, const __nv_bfloat16* x, int m, __nv_bfloat16* y,
                 WxA16Workspace& ws, cudaStream_t stream) {
  const int ku = w.unit_cols();
  const int mt = m <= 16 ? 1 : m <= 32 ? 2 : 4;
  const int rows = mt * 16;
  const int64_t col_blocks = (w.n_tiles + kTilesPerBlock - 1) / kTilesPerBlock;
  // Split K so that the busiest SM streams the fewest units, plus ~1.5 units of fixed latency per
  // wave of CTAs (x slice, first loads, the split-K epilogue).
  // Few large CTAs that stream continuously beat many one-unit CTAs (measured: 768 CTAs of one
  // unit per warp streamed 0.67 TB/s), and fewer splits mean fewer partial sums
  // to store and add.
  auto smem_for = [&](int64_t u) { return kRingBytes + rows * (int(u) * ku + 8) * 2; };
  const int64_t max_units = ((kMaxSmemBytes - kRingBytes) / (rows * 2) - 8) / ku;
  int64_t units = std::min(w.k_units, max_units);
  double best_cost = 1e300;
  for (int64_t s = (w.k_units + max_units - 1) / max_units; s <= w.k_units; ++s) {
    const int64_t u = (w.k_units + s - 1) / s;
    if ((w.k_units + u - 1) / u != s) continue;  // same CTAs as a smaller split count
    const int64_t per_sm =
        std::max<int64_t>(1, std::min<int64_t>(mt == 1 ? 2 : 1, kSmemPerSm / (smem_for(u) + 1024)));
    // The busiest SM streams ⌈CTAs / SMs⌉·u units; each wave of resident CTAs adds a latency.
    const int64_t ctas = col_blocks * s, sms = sm_count();
    const int64_t waves = (ctas + sms * per_sm - 1) / (sms * per_sm);
    const double cost = double((ctas + sms - 1) / sms * u) + 1.5 * double(waves);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      units = u;
    }
  }
  const int64_t splits = (w.k_units + units - 1) / units;

  StreamParams p{};
  p.codes = w.codes.get<const uint4>();
  p.scales = w.scales.get();
  p.zeros = w.zeros.bytes() > 0 ? w.zeros.get<const uint8_t>() : nullptr;
  p.scale_type = int(w.scale_type);
  p.symmetric_zero = w.symmetric_zero;
  p.n_groups = w.n_groups;
  p.group_size = w.group_size;
  p.x = x;
  p.m = m;
  p.k = w.cols;
  p.x_vector = w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  p.k_units = w.k_units;
  p.n_tiles = w.n_tiles;
  p.n = w.rows;
  p.y = y;
  p.partial_ld = w.n_tiles * 8;
  p.units_per_split = int(units);
  p.units_per_group = w.group_size >= ku ? int(w.group_size / ku) : 0;
  p.n_groups_int = int(w.n_groups);
  p.splits = int(splits);
  if (splits > 1) {
    ws.partial_sums.ensure(size_t(splits) * size_t(m) * size_t(p.partial_ld) * sizeof(float));
    // Fresh counters are zeroed once; the kernel leaves them zero after every call.
    if (ws.counters.ensure(size_t(col_blocks) * sizeof(int))) {
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(ws.counters.get(), 0, ws.counters.bytes(), stream));
    }
    p.partial = ws.partial_sums.get<float>();
    p.counters = ws.counters.get<int>();
  }
  const dim3 grid{unsigned(col_blocks), unsigned(splits), 1u};
  const int smem_bytes = smem_for(units);
  const int64_t spg_cols = std::min<int64_t>(ku, w.group_size);
  if (w.bits == 4) {
    if (spg_cols == 32) return launch_for_rows<4, 2>(p, grid, smem_bytes, mt, stream);
    if (spg_cols == 64) return launch_for_rows<4, 4>(p, grid, smem_bytes, mt, stream);
    return launch_for_rows<4, 8>(p, grid, smem_bytes, mt, stream);
  }
  if (spg_cols == 32) return launch_for_rows<8, 2>(p, grid, smem_bytes, mt, stream);
  launch_for_rows<8, 4>(p, grid, smem_bytes, mt, stream);
}

}  // namespace

void wxa16_dequantize(const WxA16Weight& w, void* out, cudaStream_t stream) {
  NIBBLE_CHECK(!w.fp8, "wxa16_dequantize: fp8 codes (the BulkGemv path's layout only)");
  const int64_t units = w.n_tiles * w.k_units;
  const unsigned blocks = unsigned((units + 7) / 8);
  const uint8_t* zeros = w.zeros.bytes() > 0 ? w.zeros.get<const uint8_t>() : nullptr;
  auto* dst = static_cast<__nv_bfloat16*>(out);
  if (w.bits == 4) {
    wxa16_dequantize_kernel<4><<<blocks, kThreads, 0, stream>>>(
        w.codes.get<const uint4>(), w.scales.get(), int(w.scale_type), zeros, w.symmetric_zero,
        w.n_groups, w.group_size, w.n_tiles, w.k_units, dst);
  } else {
    wxa16_dequantize_kernel<8><<<blocks, kThreads, 0, stream>>>(
        w.codes.get<const uint4>(), w.scales.get(), int(w.scale_type), zeros, w.symmetric_zero,
        w.n_groups, w.group_size, w.n_tiles, w.k_units, dst);
  }
  NIBBLE_CUDA_CHECK_LAUNCH("wxa16_dequantize_kernel");
}

static __global__ void gather_columns_kernel(const __nv_bfloat16* x, const int32_t* perm, int64_t k,
                                             __nv_bfloat16* out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = blockIdx.y;
  if (j < k) out[row * k + j] = x[row * k + perm[j]];
}

const void* wxa16_permuted_input(const WxA16Weight& w, const void* x, int64_t m, WxA16Workspace& ws,
                                 cudaStream_t stream) {
  if (w.input_perm.bytes() == 0) return x;
  NIBBLE_CHECK(m > 0 && m <= 65535, "wxa16_permuted_input: {} rows", m);
  ws.permuted_x.ensure(size_t(m * w.cols) * 2);
  const dim3 grid{unsigned((w.cols + 255) / 256), unsigned(m), 1u};
  gather_columns_kernel<<<grid, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(x),
                                                  w.input_perm.get<int32_t>(), w.cols,
                                                  ws.permuted_x.get<__nv_bfloat16>());
  NIBBLE_CUDA_CHECK_LAUNCH("gather_columns_kernel");
  return ws.permuted_x.get();
}

void wxa16_linear(LtGemm& lt, const WxA16Weight& w, const void* x, int64_t m, void* y,
                  WxA16Workspace& ws, cudaStream_t stream, WxA16Path path) {
  NIBBLE_CHECK(m > 0, "wxa16_linear: {} rows of activations", m);
  if (path == WxA16Path::Auto) {
    path = wxa16_gemv_tuning().bulk && wxa16_bulk_gemv_supports(w, m) ? WxA16Path::BulkGemv
           : wxa16_gemv_preferred(w, m)                               ? WxA16Path::Gemv
           : m <= kWxA16StreamMaxM                                    ? WxA16Path::Stream
                                                                      : WxA16Path::DequantGemm;
  }
  if (path == WxA16Path::Gemv && !w.fp8) return w4a16_gemv(w, x, m, y, ws, stream);
  x = wxa16_permuted_input(w, x, m, ws, stream);
  if (path == WxA16Path::BulkGemv) {
    WxA16Input input;
    input.x = x;
    input.permuted = true;
    return wxa16_bulk_gemv(w, input, m, y, stream);
  }
  NIBBLE_CHECK(
      !w.fp8,
      "wxa16_linear: fp8 codes run only on the BulkGemv path (sm_90, M <= 8; here M = {}); "
      "use fp8_linear",
      m);
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  auto* yb = static_cast<__nv_bfloat16*>(y);
  if (path == WxA16Path::Stream) {
    for (int64_t m0 = 0; m0 < m; m0 += kMaxPassRows) {
      const int rows = int(std::min<int64_t>(kMaxPassRows, m - m0));
      stream_pass(w, xb + m0 * w.cols, rows, yb + m0 * w.rows, ws, stream);
    }
    return;
  }
  ws.dequantized.ensure(size_t(w.n_tiles * 8) * size_t(w.padded_cols()) * 2);
  wxa16_dequantize(w, ws.dequantized.get(), stream);
  LtProblem p;
  p.m = m;
  p.n = w.rows;
  p.k = w.cols;
  p.input_type = CUDA_R_16BF;
  p.x = x;
  p.ldx = w.cols;
  p.w = ws.dequantized.get();
  p.ldw = w.padded_cols();
  p.y = y;
  p.ldy = w.rows;
  lt.matmul(p, stream);
}

}  // namespace nibble::cuda
