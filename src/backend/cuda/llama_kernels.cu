#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/llama_kernels.h"
#include "backend/cuda/programmatic_launch.cuh"

namespace nibble::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kNormThreads = 1024;
constexpr int kArgmaxThreads = 1024;

__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16(v));
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x / 32) ? scratch[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

// blockIdx.y: the row (token) of a batch.
__global__ void embedding_kernel(const bf16* table, const int32_t* token, int64_t hidden,
                                 bf16* out) {
  const bf16* row = table + size_t(token[blockIdx.y]) * size_t(hidden);
  out += size_t(blockIdx.y) * size_t(hidden);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < hidden;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = row[i];
  }
}

// One CTA per row; a row is at most a few thousand elements, read twice (the second read hits
// L1/L2).
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(bf16* residual, const bf16* delta, const bf16* weight, bf16* out, int n,
                    float eps) {
  // The GEMV that reads `out` may be scheduled now (it waits for this kernel to finish).
  allow_dependent_launch();
  __shared__ float scratch[32];
  const size_t row = size_t(blockIdx.x) * size_t(n);
  residual += row;
  out += row;
  if (delta != nullptr) delta += row;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float r = __bfloat162float(residual[i]);
    if (delta != nullptr) {
      r = round_bf16(r + __bfloat162float(delta[i]));
      residual[i] = __float2bfloat16(r);
    }
    sum = fmaf(r, r, sum);
  }
  const float inv = rsqrtf(block_sum(sum, scratch) / float(n) + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float normed = round_bf16(__bfloat162float(residual[i]) * inv);
    out[i] = __float2bfloat16(__bfloat162float(weight[i]) * normed);
  }
}

// Block h < n_heads rotates query head h; block n_heads + j rotates key head j and stores it
// and value head j in the cache. Thread i owns the pair (i, i + head_dim / 2).
__global__ void rope_cache_kernel(RopeCacheArgs a) {
  const int head = blockIdx.x, row = blockIdx.y, i = threadIdx.x, half = a.head_dim / 2;
  const int pos = a.position[row];
  auto* qkv = static_cast<bf16*>(a.qkv) + size_t(row) * (a.n_heads + 2 * a.n_kv_heads) * a.head_dim;
  // transformers: angle = inv_freq · position in f32, cos/sin in f32, cast to the model dtype.
  const float angle = float(pos) * a.inv_freq[i];
  const float c = round_bf16(cosf(angle)), s = round_bf16(sinf(angle));
  bf16* x = qkv + size_t(head) * a.head_dim;
  const float x1 = __bfloat162float(x[i]), x2 = __bfloat162float(x[i + half]);
  // q·cos + rotate_half(q)·sin, each product and the sum rounded as bf16 tensors are.
  const bf16 r1 = __float2bfloat16(round_bf16(x1 * c) + round_bf16(-x2 * s));
  const bf16 r2 = __float2bfloat16(round_bf16(x2 * c) + round_bf16(x1 * s));
  if (head < a.n_heads) {
    x[i] = r1;
    x[i + half] = r2;
    if (head == 0 && i == 0) a.seq_len[row] = pos + 1;
    return;
  }
  const int kv_head = head - a.n_heads;
  const int block = a.block_tables == nullptr
                        ? pos / 16
                        : a.block_tables[size_t(row) * a.max_blocks_per_row + pos / 16];
  const size_t slot = ((size_t(block) * a.n_kv_heads + kv_head) * 16 + pos % 16) * a.head_dim;
  auto* k_cache = static_cast<bf16*>(a.k_cache);
  auto* v_cache = static_cast<bf16*>(a.v_cache);
  k_cache[slot + i] = r1;
  k_cache[slot + i + half] = r2;
  const bf16* v = qkv + size_t(a.n_heads + a.n_kv_heads + kv_head) * a.head_dim;
  v_cache[slot + i] = v[i];
  v_cache[slot + i + half] = v[i + half];
}

// Row r of gate_up is [gate (n) | up (n)]; out is [rows][n].
__global__ void silu_mul_kernel(const bf16* gate_up, bf16* out, int64_t n, int64_t rows) {
  allow_dependent_launch();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * rows;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, j = i - r * n;
    const bf16* g_row = gate_up + r * 2 * n;
    const float g = __bfloat162float(g_row[j]);
    const float act = round_bf16(g / (1.0f + expf(-g)));
    out[i] = __float2bfloat16(act * __bfloat162float(g_row[n + j]));
  }
}

__device__ __forceinline__ bool better(float v1, int64_t i1, float v2, int64_t i2) {
  return v2 > v1 || (v2 == v1 && i2 < i1);
}

// The first maximum of logits[begin, end) over the CTA (index n when the range is empty); the
// result is valid in thread 0. Each thread scans increasing indices, so a strict > keeps its
// first maximum, and ties between threads go to the lower index.
__device__ void cta_first_max(const bf16* logits, int64_t begin, int64_t end, int64_t n,
                              float& value, int64_t& index) {
  __shared__ float best_value[kArgmaxThreads / 32];
  __shared__ int64_t best_index[kArgmaxThreads / 32];
  value = -FLT_MAX;
  index = n;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float v = __bfloat162float(logits[i]);
    if (v > value || (index == n && v == value)) value = v, index = i;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, value, o);
    const int64_t i = __shfl_xor_sync(0xffffffffu, index, o);
    if (better(value, index, v, i)) value = v, index = i;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) best_value[warp] = value, best_index[warp] = index;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < int(blockDim.x / 32); ++w) {
    if (better(value, index, best_value[w], best_index[w])) {
      value = best_value[w], index = best_index[w];
    }
  }
}

// Each CTA scans its own contiguous slice of the logits (first maximum wins inside it) and
// leaves its pick in `partial`; the last CTA to finish (a counter, reset by it) takes the best
// pick in slice order, so the first index of the maximum wins overall, as torch.argmax. One
// CTA over 128K logits took 50 µs of a 3 ms decode step.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const bf16* logits, int64_t n, int64_t slice, float* partial_value,
                  int64_t* partial_index, int* counter, int32_t* token, int32_t* history,
                  int32_t* position) {
  __shared__ bool is_last;
  const int64_t begin = int64_t(blockIdx.x) * slice;
  const int64_t end = begin + slice < n ? begin + slice : n;
  float value;
  int64_t index;
  cta_first_max(logits, begin, end, n, value, index);
  if (threadIdx.x == 0) {
    partial_value[blockIdx.x] = value;
    partial_index[blockIdx.x] = index;
    __threadfence();
    is_last = atomicAdd(counter, 1) == int(gridDim.x) - 1;
  }
  __syncthreads();
  if (!is_last || threadIdx.x != 0) return;
  __threadfence();
  value = __ldcg(partial_value);
  index = __ldcg(partial_index);
  for (unsigned b = 1; b < gridDim.x; ++b) {
    const float v = __ldcg(partial_value + b);
    const int64_t i = __ldcg(partial_index + b);
    if (better(value, index, v, i)) value = v, index = i;
  }
  *counter = 0;
  const int pos = *position;
  *token = int32_t(index);
  history[pos] = int32_t(index);
  *position = pos + 1;
}

// One CTA per row: the first index of the row's maximum.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_rows_kernel(const bf16* logits, int64_t n, int32_t* picks) {
  float value;
  int64_t index;
  cta_first_max(logits + size_t(blockIdx.x) * size_t(n), 0, n, n, value, index);
  if (threadIdx.x == 0) picks[blockIdx.x] = int32_t(index);
}

__global__ void gather_rows_kernel(const bf16* src, const int32_t* index, int64_t n, bf16* dst) {
  const bf16* from = src + size_t(index[blockIdx.y]) * size_t(n);
  bf16* to = dst + size_t(blockIdx.y) * size_t(n);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    to[i] = from[i];
  }
}

// tables[r][j] = seq[r] · blocks_per_seq + j: each sequence owns a contiguous run of blocks.
__global__ void row_block_tables_kernel(const int32_t* seq, int blocks_per_seq, int32_t* tables) {
  const int r = blockIdx.x;
  for (int j = threadIdx.x; j < blocks_per_seq; j += blockDim.x) {
    tables[size_t(r) * blocks_per_seq + j] = seq[r] * blocks_per_seq + j;
  }
}

__global__ void set_token_kernel(int32_t* token, int32_t value) { *token = value; }

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin_kernel(uint64_t nanoseconds) {
  const uint64_t start = global_timer_ns();
  while (global_timer_ns() - start < nanoseconds) __nanosleep(1000);
}

}  // namespace

void embedding_lookup(const void* table, const int32_t* token, int64_t hidden, void* out,
                      cudaStream_t stream, int64_t rows) {
  NIBBLE_CHECK(rows > 0 && rows <= 65535, "embedding_lookup: {} rows", rows);
  const dim3 blocks(unsigned((hidden + 255) / 256), unsigned(rows));
  embedding_kernel<<<blocks, 256, 0, stream>>>(static_cast<const bf16*>(table), token, hidden,
                                               static_cast<bf16*>(out));
  NIBBLE_CUDA_CHECK_LAUNCH("embedding_kernel");
}

void rms_norm(void* residual, const void* delta, const void* weight, void* out, int64_t n,
              float eps, cudaStream_t stream, int64_t rows) {
  NIBBLE_CHECK(n > 0 && n < (int64_t(1) << 30), "rms_norm: {} elements", n);
  NIBBLE_CHECK(rows > 0 && rows < (int64_t(1) << 31), "rms_norm: {} rows", rows);
  rms_norm_kernel<<<unsigned(rows), kNormThreads, 0, stream>>>(
      static_cast<bf16*>(residual), static_cast<const bf16*>(delta),
      static_cast<const bf16*>(weight), static_cast<bf16*>(out), int(n), eps);
  NIBBLE_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}

void rope_and_cache(const RopeCacheArgs& args, cudaStream_t stream) {
  NIBBLE_CHECK(
      args.head_dim % 2 == 0 && args.head_dim <= 2048 && args.n_heads > 0 && args.n_kv_heads > 0,
      "rope_and_cache: head_dim {}, {} heads, {} KV heads", args.head_dim, args.n_heads,
      args.n_kv_heads);
  NIBBLE_CHECK(args.rows > 0 && args.rows <= 65535, "rope_and_cache: {} rows", args.rows);
  NIBBLE_CHECK(args.block_tables == nullptr || args.max_blocks_per_row > 0,
               "rope_and_cache: block tables of {} blocks per row", args.max_blocks_per_row);
  const dim3 grid(unsigned(args.n_heads + args.n_kv_heads), unsigned(args.rows));
  rope_cache_kernel<<<grid, args.head_dim / 2, 0, stream>>>(args);
  NIBBLE_CUDA_CHECK_LAUNCH("rope_cache_kernel");
}

void silu_mul(const void* gate_up, void* out, int64_t n, cudaStream_t stream, int64_t rows) {
  NIBBLE_CHECK(n > 0 && rows > 0, "silu_mul: {} rows of {}", rows, n);
  const int blocks = int(std::min<int64_t>((n * rows + 255) / 256, 1024));
  silu_mul_kernel<<<blocks, 256, 0, stream>>>(static_cast<const bf16*>(gate_up),
                                              static_cast<bf16*>(out), n, rows);
  NIBBLE_CUDA_CHECK_LAUNCH("silu_mul_kernel");
}

void argmax_and_advance(const void* logits, int64_t n, int32_t* token, int32_t* history,
                        int32_t* position, DeviceBuffer& scratch, cudaStream_t stream) {
  NIBBLE_CHECK(n > 0, "argmax_and_advance: {} logits", n);
  // Slices of at least 4 Ki logits (a few loads per thread), at most 64 CTAs.
  const int64_t blocks = std::min<int64_t>(64, (n + 4095) / 4096);
  const int64_t slice = (n + blocks - 1) / blocks;
  const size_t bytes = size_t(blocks) * (sizeof(float) + sizeof(int64_t)) + 16;
  if (scratch.ensure(bytes)) {
    // The counter (first 4 bytes) starts at zero; the kernel leaves it zero.
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(scratch.get(), 0, scratch.bytes(), stream));
  }
  auto* base = scratch.get<unsigned char>();
  auto* counter = reinterpret_cast<int*>(base);
  auto* partial_index = reinterpret_cast<int64_t*>(base + 16);
  auto* partial_value = reinterpret_cast<float*>(base + 16 + size_t(blocks) * sizeof(int64_t));
  argmax_kernel<<<unsigned(blocks), kArgmaxThreads, 0, stream>>>(
      static_cast<const bf16*>(logits), n, slice, partial_value, partial_index, counter, token,
      history, position);
  NIBBLE_CUDA_CHECK_LAUNCH("argmax_kernel");
}

void argmax_rows(const void* logits, int64_t rows, int64_t n, int32_t* picks, cudaStream_t stream) {
  NIBBLE_CHECK(rows > 0 && rows < (int64_t(1) << 31) && n > 0, "argmax_rows: {} rows of {}", rows,
               n);
  argmax_rows_kernel<<<unsigned(rows), kArgmaxThreads, 0, stream>>>(
      static_cast<const bf16*>(logits), n, picks);
  NIBBLE_CUDA_CHECK_LAUNCH("argmax_rows_kernel");
}

void gather_rows(const void* src, const int32_t* index, int64_t count, int64_t n, void* dst,
                 cudaStream_t stream) {
  NIBBLE_CHECK(count > 0 && count <= 65535 && n > 0, "gather_rows: {} rows of {}", count, n);
  const dim3 blocks(unsigned(std::min<int64_t>((n + 255) / 256, 64)), unsigned(count));
  gather_rows_kernel<<<blocks, 256, 0, stream>>>(static_cast<const bf16*>(src), index, n,
                                                 static_cast<bf16*>(dst));
  NIBBLE_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void row_block_tables(const int32_t* seq, int64_t rows, int blocks_per_seq, int32_t* tables,
                      cudaStream_t stream) {
  NIBBLE_CHECK(rows > 0 && rows < (int64_t(1) << 31) && blocks_per_seq > 0,
               "row_block_tables: {} rows, {} blocks per sequence", rows, blocks_per_seq);
  row_block_tables_kernel<<<unsigned(rows), 128, 0, stream>>>(seq, blocks_per_seq, tables);
  NIBBLE_CUDA_CHECK_LAUNCH("row_block_tables_kernel");
}

void gpu_spin(int64_t nanoseconds, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(uint64_t(std::max<int64_t>(nanoseconds, 0)));
  NIBBLE_CUDA_CHECK_LAUNCH("spin_kernel");
}

void set_token(int32_t* token, int32_t value, cudaStream_t stream) {
  set_token_kernel<<<1, 1, 0, stream>>>(token, value);
  NIBBLE_CUDA_CHECK_LAUNCH("set_token_kernel");
}

}  // namespace nibble::cuda
