#pragma once
// Decode attention over the paged KV cache on the GPU: one new query token per sequence, bf16
// K/V in blocks of 16 token slots laid out [block][kv_head][slot][head_dim] (one layer of
// runtime/kv_cache.h's layout), grouped-query attention (n_heads a multiple of n_kv_heads, at
// most 8 query heads per KV head), head_dim 64 or 128.
//
// One CTA per (KV head, sequence, partition of up to kPagedAttentionMaxPartition tokens; fewer
// when sequences × KV heads alone would leave SMs idle) computes the
// scores of all the KV head's query heads at once (each K row is read once for the group), the
// softmax and the weighted V sum. Sequences longer than one partition are split over the
// sequence (more CTAs stream at once); a second kernel merges the partitions' results through
// their maxima and sums.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"

namespace nibble::cuda {

inline constexpr int kPagedAttentionBlockSize = 16;
inline constexpr int kPagedAttentionMaxPartition = 512;
inline constexpr int kPagedAttentionMaxGroup = 8;

struct PagedAttentionArgs {
  const void* q = nullptr;                // bf16 [num_seqs][n_heads][head_dim]
  const void* k_cache = nullptr;          // bf16 [n_blocks][n_kv_heads][16][head_dim]
  const void* v_cache = nullptr;          // same layout
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq] physical blocks
  const int32_t* seq_lens = nullptr;      // [num_seqs] tokens in the cache (≥ 1), on the device
  void* out = nullptr;                    // bf16 [num_seqs][n_heads][head_dim]
  int num_seqs = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int max_blocks_per_seq = 0;
  int max_seq_len = 0;  // an upper bound of seq_lens (sizes the grid)
  float scale = 1.0f;   // softmax scale, usually 1/sqrt(head_dim)
  // Elements from one sequence's query to the next (0: n_heads · head_dim, packed). A batch
  // forward passes its qkv rows directly: q heads first, then k and v.
  int64_t q_stride = 0;
};

// Scratch for the split over the sequence; grown on first use.
struct PagedAttentionWorkspace {
  DeviceBuffer partial_out;  // f32 [num_seqs][n_heads][partitions][head_dim]
  DeviceBuffer partial_max;  // f32 [num_seqs][n_heads][partitions]
  DeviceBuffer partial_sum;  // f32 [num_seqs][n_heads][partitions]
};

// The split over the sequence halves the partition (from kPagedAttentionMaxPartition) while the
// grid has fewer than 2 CTAs per SM, down to `min_partition` tokens (a power of two, 16..512).
// Batch-1 decode of a short context is latency-bound: smaller partitions mean more CTAs, each
// with fewer dependent K-row loads per warp. Measured on an H200 (synthetic Llama-3-8B, 200
// new tokens, docs/benchmarks.md): 16 instead of 64 took 0.55 ms off a decode step (W4A16
// 3.76 → 3.21 ms, bf16 5.38 → 4.84 ms); it only matters below ~1K tokens of context at batch 1.
struct PagedAttentionTuning {
  int min_partition = 16;
};
PagedAttentionTuning& paged_attention_tuning();

// Errors name the unsupported parameter (head_dim, group size).
void paged_attention_decode(const PagedAttentionArgs& args, PagedAttentionWorkspace& workspace,
                            cudaStream_t stream);

}  // namespace nibble::cuda
