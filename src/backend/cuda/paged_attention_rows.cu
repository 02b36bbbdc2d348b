// Tensor-core attention of row tiles over the paged KV cache (see paged_attention_rows.h).
#include <cuda_bf16.h>

#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/paged_attention_rows.h"
#include "backend/cuda/wxa16_device.cuh"

namespace nibble::cuda {
namespace {

using namespace wxa16_detail;

constexpr int kChunk = 64;  // tokens of K and V per shared-memory stage
constexpr int kBlock = 16;  // token slots per KV block
constexpr int kMaxGroup = 8;

template <int D>
struct Shape {
  // +8 elements per row: the 8 row addresses of an ldmatrix then fall in 8 distinct bank
  // groups (rows of exactly 128 or 256 bytes would all start in the same bank).
  static constexpr int kStride = D + 8;
  static constexpr int kStageElems = 2 * kChunk * kStride;  // K, then V
  static constexpr int kSmemBytes = 2 * kStageElems * 2;    // two stages of bf16
};

struct KernelArgs {
  const __nv_bfloat16* q;
  int64_t q_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  const int32_t* block_tables;
  int max_blocks_per_row;
  const RowTile* tiles;
  __nv_bfloat16* out;
  int n_heads;
  int n_kv_heads;
  int group;
  float scale_log2;  // softmax scale · log2(e): the exponentials are exp2
};

// One CTA per (tile, KV head); warp w computes query head kv_head·group + w for the tile's rows
// (the mma's 16 rows; rows past the tile are zero queries whose results are dropped).
template <int D>
__global__ void __launch_bounds__(32 * kMaxGroup) rows_attention_kernel(KernelArgs a) {
  using S = Shape<D>;
  extern __shared__ __align__(16) __nv_bfloat16 kv_smem[];
  const RowTile tile = a.tiles[blockIdx.x];
  const int kv_head = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int head = kv_head * a.group + warp;
  const int last_position = tile.first_position + tile.rows - 1;
  const int32_t* table = a.block_tables + int64_t(tile.row_begin) * a.max_blocks_per_row;
  const int64_t head_offset = int64_t(kv_head) * kBlock * D;
  const int64_t block_stride = int64_t(a.n_kv_heads) * kBlock * D;

  // Chunk c's K and V rows into stage c % 2, 16 bytes per copy; tokens past the tile's last
  // position are zero (their probabilities are 0, and stale slots could hold NaN bit patterns).
  auto load_chunk = [&](int c) {
    __nv_bfloat16* stage = kv_smem + (c & 1) * S::kStageElems;
    constexpr int kVectors = kChunk * D / 8;
    for (int i = threadIdx.x; i < 2 * kVectors; i += blockDim.x) {
      const int which = i / kVectors, j = i % kVectors;
      const int token = j / (D / 8), vec = j % (D / 8);
      const int t = c * kChunk + token;
      const __nv_bfloat16* cache = which == 0 ? a.k_cache : a.v_cache;
      const bool inside = t <= last_position;
      const __nv_bfloat16* src = inside ? cache + table[t / kBlock] * block_stride + head_offset +
                                              (t % kBlock) * D + vec * 8
                                        : cache;
      cp_async_16_zfill(stage + which * kChunk * S::kStride + token * S::kStride + vec * 8, src,
                        inside ? 16 : 0);
    }
    cp_async_commit();
  };
  const int chunks = (last_position + kChunk) / kChunk;
  load_chunk(0);

  // Q as A fragments (row g / g + 8, columns 2·t4 (+8) of each 16-column step).
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int s = 0; s < D / 16; ++s) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1), col = 16 * s + 2 * t4 + 8 * (r >> 1);
      qf[s][r] =
          row < tile.rows
              ? *reinterpret_cast<const uint32_t*>(
                    a.q + int64_t(tile.row_begin + row) * a.q_stride + int64_t(head) * D + col)
              : 0u;
    }
  }
  // The positions of this thread's two rows (padding rows take the last, so no row is empty).
  int position[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) position[h] = tile.first_position + min(g + 8 * h, tile.rows - 1);

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};

  for (int c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) {
      load_chunk(c + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* ks = kv_smem + (c & 1) * S::kStageElems;
    const __nv_bfloat16* vs = ks + kChunk * S::kStride;

    // S = Q·Kᵀ over the chunk's 8 tiles of 8 tokens; one ldmatrix.x4 gives two k-steps.
    float s[kChunk / 8][4];
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int k2 = 0; k2 < D / 32; ++k2) {
        uint32_t b[4];
        ldmatrix_x4(b, ks + (j * 8 + lane % 8) * S::kStride + 32 * k2 + 8 * (lane / 8));
        mma_bf16_16816(s[j], qf[2 * k2], b[0], b[1]);
        mma_bf16_16816(s[j], qf[2 * k2 + 1], b[2], b[3]);
      }
    }
    // Causal mask, scale and the online softmax of rows g (h = 0) and g + 8 (h = 1).
    float chunk_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = c * kChunk + j * 8 + 2 * t4 + (e & 1);
        const float v = t <= position[e >> 1] ? s[j][e] * a.scale_log2 : -INFINITY;
        s[j][e] = v;
        chunk_max[e >> 1] = fmaxf(chunk_max[e >> 1], v);
      }
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // The four lanes of a quad hold one row's 64 scores.
      chunk_max[h] = fmaxf(chunk_max[h], __shfl_xor_sync(0xffffffffu, chunk_max[h], 1));
      chunk_max[h] = fmaxf(chunk_max[h], __shfl_xor_sync(0xffffffffu, chunk_max[h], 2));
      // Chunk 0 holds position 0, so every row's maximum is finite from there on.
      const float new_max = fmaxf(row_max[h], chunk_max[h]);
      alpha[h] = exp2f(row_max[h] - new_max);
      row_max[h] = new_max;
    }
    float chunk_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - row_max[e >> 1]);
        chunk_sum[e >> 1] += s[j][e];
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      chunk_sum[h] += __shfl_xor_sync(0xffffffffu, chunk_sum[h], 1);
      chunk_sum[h] += __shfl_xor_sync(0xffffffffu, chunk_sum[h], 2);
      row_sum[h] = row_sum[h] * alpha[h] + chunk_sum[h];
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0];
      o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
    // O += P·V: the C fragments of two token tiles are the A fragment of one 16-token k-step.
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      const uint32_t p[4] = {bf16x2_pack(s[2 * kk][0], s[2 * kk][1]),
                             bf16x2_pack(s[2 * kk][2], s[2 * kk][3]),
                             bf16x2_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             bf16x2_pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n2 = 0; n2 < D / 16; ++n2) {
        uint32_t b[4];
        const int i = lane / 8;
        ldmatrix_x4_trans(
            b, vs + (16 * kk + (i % 2) * 8 + lane % 8) * S::kStride + 16 * n2 + (i / 2) * 8);
        mma_bf16_16816(o[2 * n2], p, b[0], b[1]);
        mma_bf16_16816(o[2 * n2 + 1], p, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = g + 8 * h;
    if (row >= tile.rows) continue;
    const float inv = 1.0f / row_sum[h];
    __nv_bfloat16* dst = a.out + (int64_t(tile.row_begin + row) * a.n_heads + head) * D + 2 * t4;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<__nv_bfloat162*>(dst + 8 * n) =
          __floats2bfloat162_rn(o[n][2 * h] * inv, o[n][2 * h + 1] * inv);
    }
  }
}

template <int D>
void launch(const KernelArgs& a, int n_tiles, cudaStream_t stream) {
  static const bool configured = [] {
    NIBBLE_CUDA_CHECK(cudaFuncSetAttribute(rows_attention_kernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Shape<D>::kSmemBytes));
    return true;
  }();
  (void)configured;
  const dim3 grid{unsigned(n_tiles), unsigned(a.n_kv_heads), 1u};
  rows_attention_kernel<D><<<grid, 32 * a.group, Shape<D>::kSmemBytes, stream>>>(a);
  NIBBLE_CUDA_CHECK_LAUNCH("rows_attention_kernel");
}

}  // namespace

std::vector<RowTile> make_row_tiles(const std::vector<int32_t>& seq,
                                    const std::vector<int32_t>& position) {
  NIBBLE_CHECK(seq.size() == position.size(), "make_row_tiles: {} sequences for {} positions",
               seq.size(), position.size());
  std::vector<RowTile> tiles;
  for (size_t r = 0; r < seq.size(); ++r) {
    if (!tiles.empty()) {
      RowTile& t = tiles.back();
      const size_t last = size_t(t.row_begin + t.rows - 1);
      if (t.rows < kRowTileRows && seq[r] == seq[last] && position[r] == position[last] + 1) {
        ++t.rows;
        continue;
      }
    }
    tiles.push_back(RowTile{int32_t(r), 1, position[r]});
  }
  return tiles;
}

void paged_attention_rows(const PagedRowsAttentionArgs& args, cudaStream_t stream) {
  NIBBLE_CHECK(args.head_dim == 64 || args.head_dim == 128,
               "paged_attention_rows: head_dim {} (the kernel takes 64 or 128)", args.head_dim);
  NIBBLE_CHECK(args.n_kv_heads > 0 && args.n_heads % args.n_kv_heads == 0 &&
                   args.n_heads / args.n_kv_heads <= kMaxGroup,
               "paged_attention_rows: {} query heads over {} KV heads (a group of at most {})",
               args.n_heads, args.n_kv_heads, kMaxGroup);
  NIBBLE_CHECK(args.n_tiles > 0 && args.n_kv_heads <= 65535,
               "paged_attention_rows: {} tiles, {} KV heads", args.n_tiles, args.n_kv_heads);
  KernelArgs a{};
  a.q = static_cast<const __nv_bfloat16*>(args.q);
  a.q_stride = args.q_stride > 0 ? args.q_stride : int64_t(args.n_heads) * args.head_dim;
  a.k_cache = static_cast<const __nv_bfloat16*>(args.k_cache);
  a.v_cache = static_cast<const __nv_bfloat16*>(args.v_cache);
  a.block_tables = args.block_tables;
  a.max_blocks_per_row = args.max_blocks_per_row;
  a.tiles = args.tiles;
  a.out = static_cast<__nv_bfloat16*>(args.out);
  a.n_heads = args.n_heads;
  a.n_kv_heads = args.n_kv_heads;
  a.group = args.n_heads / args.n_kv_heads;
  a.scale_log2 = args.scale * 1.4426950408889634f;
  if (args.head_dim == 128) return launch<128>(a, args.n_tiles, stream);
  launch<64>(a, args.n_tiles, stream);
}

}  // namespace nibble::cuda
