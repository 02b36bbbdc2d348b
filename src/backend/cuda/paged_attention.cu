// Paged decode attention (see paged_attention.h).
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>

#include "backend/cuda/device_properties.h"
#include "backend/cuda/paged_attention.h"
#include "backend/cuda/programmatic_launch.cuh"

namespace nibble::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kBlock = kPagedAttentionBlockSize;
constexpr int kMaxPartition = kPagedAttentionMaxPartition;
constexpr int kMaxGroup = kPagedAttentionMaxGroup;

struct KernelArgs {
  const __nv_bfloat16* q;
  int64_t q_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  const int32_t* block_tables;
  const int32_t* seq_lens;
  __nv_bfloat16* out;
  float* partial_out;
  float* partial_max;
  float* partial_sum;
  int n_heads;
  int n_kv_heads;
  int group;
  int max_blocks_per_seq;
  int partition;   // tokens per partition (a multiple of 16, ≤ kMaxPartition)
  int partitions;  // grid.z: 1 means the result goes straight to `out`
  float scale;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// D elements per K/V row; lanes hold D/32 consecutive elements of a row for the scores, and
// threads hold bf16 pairs of a row for the weighted V sum.
template <int D>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(KernelArgs a) {
  allow_dependent_launch();    // the output projection's GEMV may be scheduled (it waits)
  constexpr int EPL = D / 32;  // 2 or 4 elements per lane
  constexpr int PAIR_THREADS = D / 2;
  constexpr int TOKEN_LANES = kThreads / PAIR_THREADS;  // tokens summed at once in the V pass
  extern __shared__ float scores[];                     // [group][partition]
  __shared__ float reduce[TOKEN_LANES][kMaxGroup][D];
  __shared__ float head_max[kMaxGroup], head_sum[kMaxGroup];

  const int kv_head = blockIdx.x, seq = blockIdx.y, part = blockIdx.z;
  const int seq_len = a.seq_lens[seq];
  const int partition = a.partition;
  const int t_begin = part * partition;
  if (t_begin >= seq_len) return;
  const int t_end = min(t_begin + partition, seq_len);
  const int n_tokens = t_end - t_begin;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = a.group;
  const int32_t* table = a.block_tables + size_t(seq) * a.max_blocks_per_seq;
  const size_t head_stride = size_t(kBlock) * D;
  const size_t block_stride = size_t(a.n_kv_heads) * head_stride;
  const size_t kv_head_offset = size_t(kv_head) * head_stride;

  // The group's queries, pre-scaled, EPL elements per lane.
  float q[kMaxGroup][EPL];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
      q[h][e] = h < group
                    ? __bfloat162float(a.q[size_t(seq) * a.q_stride +
                                           size_t(kv_head * group + h) * D + lane * EPL + e]) *
                          a.scale
                    : 0.0f;
    }
  }

  // Scores: warp w takes tokens w, w + 4, ...; one K row feeds every query head of the group.
  for (int i = warp; i < n_tokens; i += kWarps) {
    const int t = t_begin + i;
    const __nv_bfloat16* k_row = a.k_cache + size_t(table[t / kBlock]) * block_stride +
                                 kv_head_offset + size_t(t % kBlock) * D + lane * EPL;
    float k[EPL];
    if constexpr (EPL == 4) {
      const uint2 raw = *reinterpret_cast<const uint2*>(k_row);
      const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
      const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
      k[0] = lo.x, k[1] = lo.y, k[2] = hi.x, k[3] = hi.y;
    } else {
      const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(k_row));
      k[0] = v.x, k[1] = v.y;
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < EPL; ++e) dot = fmaf(q[h][e], k[e], dot);
      dot = warp_sum(dot);
      if (lane == 0) scores[h * partition + i] = dot;
    }
  }
  __syncthreads();

  // Softmax numerators in place; warp w owns heads w, w + 4.
  for (int h = warp; h < group; h += kWarps) {
    float m = -FLT_MAX;
    for (int i = lane; i < n_tokens; i += 32) m = fmaxf(m, scores[h * partition + i]);
    m = warp_max(m);
    float s = 0.0f;
    for (int i = lane; i < n_tokens; i += 32) {
      const float p = expf(scores[h * partition + i] - m);
      scores[h * partition + i] = p;
      s += p;
    }
    s = warp_sum(s);
    if (lane == 0) head_max[h] = m, head_sum[h] = s;
  }
  __syncthreads();

  // Weighted V sum: thread = (token lane, bf16 pair of the row).
  const int pair = threadIdx.x % PAIR_THREADS, token_lane = threadIdx.x / PAIR_THREADS;
  float acc[kMaxGroup][2];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) acc[h][0] = acc[h][1] = 0.0f;
  for (int i = token_lane; i < n_tokens; i += TOKEN_LANES) {
    const int t = t_begin + i;
    const __nv_bfloat16* v_row = a.v_cache + size_t(table[t / kBlock]) * block_stride +
                                 kv_head_offset + size_t(t % kBlock) * D + 2 * pair;
    const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(v_row));
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      const float p = scores[h * partition + i];
      acc[h][0] = fmaf(p, v.x, acc[h][0]);
      acc[h][1] = fmaf(p, v.y, acc[h][1]);
    }
  }
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h >= group) break;
    reduce[token_lane][h][2 * pair] = acc[h][0];
    reduce[token_lane][h][2 * pair + 1] = acc[h][1];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * D; i += kThreads) {
    const int h = i / D, d = i % D;
    float sum = 0.0f;
#pragma unroll
    for (int tl = 0; tl < TOKEN_LANES; ++tl) sum += reduce[tl][h][d];
    const int head = kv_head * group + h;
    const float value = sum / head_sum[h];
    if (a.partitions == 1) {
      a.out[(size_t(seq) * a.n_heads + head) * D + d] = __float2bfloat16(value);
    } else {
      const size_t slot = (size_t(seq) * a.n_heads + head) * a.partitions + part;
      a.partial_out[slot * D + d] = value;
      if (d == 0) a.partial_max[slot] = head_max[h], a.partial_sum[slot] = head_sum[h];
    }
  }
}

// Merges the partitions of one (sequence, head): out = Σ_p w_p·o_p / Σ_p w_p with
// w_p = sum_p·exp(max_p - max).
__global__ void paged_attention_merge_kernel(KernelArgs a, int d) {
  allow_dependent_launch();
  const int head = blockIdx.x, seq = blockIdx.y;
  const int parts = (a.seq_lens[seq] + a.partition - 1) / a.partition;
  const size_t base = (size_t(seq) * a.n_heads + head) * a.partitions;
  float m = -FLT_MAX;
  for (int p = 0; p < parts; ++p) m = fmaxf(m, a.partial_max[base + p]);
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int p = 0; p < parts; ++p) {
      const float w = a.partial_sum[base + p] * expf(a.partial_max[base + p] - m);
      num = fmaf(w, a.partial_out[(base + p) * d + i], num);
      den += w;
    }
    a.out[(size_t(seq) * a.n_heads + head) * d + i] = __float2bfloat16(num / den);
  }
}

int sm_count() { return device_properties().sm_count; }

}  // namespace

PagedAttentionTuning& paged_attention_tuning() {
  static PagedAttentionTuning tuning;
  return tuning;
}

void paged_attention_decode(const PagedAttentionArgs& args, PagedAttentionWorkspace& ws,
                            cudaStream_t stream) {
  NIBBLE_CHECK(args.head_dim == 64 || args.head_dim == 128,
               "paged_attention_decode: head_dim {} (the kernel takes 64 or 128)", args.head_dim);
  NIBBLE_CHECK(args.n_kv_heads > 0 && args.n_heads % args.n_kv_heads == 0 &&
                   args.n_heads / args.n_kv_heads <= kMaxGroup,
               "paged_attention_decode: {} query heads over {} KV heads (a group of at most {})",
               args.n_heads, args.n_kv_heads, kMaxGroup);
  NIBBLE_CHECK(args.num_seqs > 0 && args.max_seq_len > 0,
               "paged_attention_decode: {} sequences, max_seq_len {}", args.num_seqs,
               args.max_seq_len);
  KernelArgs a{};
  a.q = static_cast<const __nv_bfloat16*>(args.q);
  a.q_stride = args.q_stride > 0 ? args.q_stride : int64_t(args.n_heads) * args.head_dim;
  a.k_cache = static_cast<const __nv_bfloat16*>(args.k_cache);
  a.v_cache = static_cast<const __nv_bfloat16*>(args.v_cache);
  a.block_tables = args.block_tables;
  a.seq_lens = args.seq_lens;
  a.out = static_cast<__nv_bfloat16*>(args.out);
  a.n_heads = args.n_heads;
  a.n_kv_heads = args.n_kv_heads;
  a.group = args.n_heads / args.n_kv_heads;
  a.max_blocks_per_seq = args.max_blocks_per_seq;
  // Halve the partition while the grid would leave SMs without two CTAs (batch-1 decode of a
  // long context is otherwise a few dozen CTAs).
  a.partition = kMaxPartition;
  auto ctas = [&](int p) {
    return int64_t(args.n_kv_heads) * args.num_seqs * ((args.max_seq_len + p - 1) / p);
  };
  const int min_partition = paged_attention_tuning().min_partition;
  NIBBLE_CHECK(min_partition >= kBlock && min_partition <= kMaxPartition &&
                   (min_partition & (min_partition - 1)) == 0,
               "paged_attention_decode: min_partition {} (a power of two, {}..{})", min_partition,
               kBlock, kMaxPartition);
  while (a.partition > min_partition && ctas(a.partition) < 2 * int64_t(sm_count())) {
    a.partition /= 2;
  }
  a.partitions = (args.max_seq_len + a.partition - 1) / a.partition;
  a.scale = args.scale;
  if (a.partitions > 1) {
    const size_t slots = size_t(args.num_seqs) * args.n_heads * a.partitions;
    ws.partial_out.ensure(slots * args.head_dim * sizeof(float));
    ws.partial_max.ensure(slots * sizeof(float));
    ws.partial_sum.ensure(slots * sizeof(float));
    a.partial_out = ws.partial_out.get<float>();
    a.partial_max = ws.partial_max.get<float>();
    a.partial_sum = ws.partial_sum.get<float>();
  }
  const dim3 grid{unsigned(args.n_kv_heads), unsigned(args.num_seqs), unsigned(a.partitions)};
  const int smem = a.group * a.partition * int(sizeof(float));
  if (args.head_dim == 128) {
    paged_attention_kernel<128><<<grid, kThreads, smem, stream>>>(a);
  } else {
    paged_attention_kernel<64><<<grid, kThreads, smem, stream>>>(a);
  }
  NIBBLE_CUDA_CHECK_LAUNCH("paged_attention_kernel");
  if (a.partitions > 1) {
    paged_attention_merge_kernel<<<dim3(unsigned(args.n_heads), unsigned(args.num_seqs)), kThreads,
                                   0, stream>>>(a, args.head_dim);
    NIBBLE_CUDA_CHECK_LAUNCH("paged_attention_merge_kernel");
  }
}

}  // namespace nibble::cuda
