#pragma once
// The small kernels of a Llama forward pass on the GPU (bf16 activations; `rows` tokens at once,
// one for a batch-1 decode step). Each rounds
// where transformers' bf16 Llama rounds, so that nibble's logits differ from transformers' only
// by summation order: RMSNorm normalizes in f32, rounds to bf16, then multiplies by the weight
// in bf16; RoPE rounds cos/sin to bf16 and rounds each product and the sum; SiLU rounds before
// the multiplication by `up`.
//
// Positions and token ids live on the device so that a whole decode step can be captured once
// in a CUDA graph and replayed: `position` is read by RoPE / the KV write and advanced by
// argmax at the end of the step.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device_buffer.h"

namespace nibble::cuda {

// out[r][hidden] = table[token[r]][hidden] (bf16 rows) for r < rows.
void embedding_lookup(const void* table, const int32_t* token, int64_t hidden, void* out,
                      cudaStream_t stream, int64_t rows = 1);

// out = rms_norm(x)·weight per row of n. With `delta` non-null, first residual = bf16(residual +
// delta) in place and the norm is taken of the sum (the residual add of the previous sub-block).
void rms_norm(void* residual, const void* delta, const void* weight, void* out, int64_t n,
              float eps, cudaStream_t stream, int64_t rows = 1);

// RoPE (rotate-half layout) on the query and key heads of each row of qkv = [q heads | k heads |
// v heads] (bf16, head_dim each) at that row's position[r], in place; then the rotated key and
// the value go into slot position[r] of the layer's paged KV cache (layout
// [block][kv_head][16][head_dim]; token t sits in block table[t / 16], slot t % 16, where the
// table is row r's of `block_tables`, or the identity when that is null). seq_len[r] (for
// attention) becomes position[r] + 1.
struct RopeCacheArgs {
  void* qkv = nullptr;                // [rows][(n_heads + 2 n_kv_heads) head_dim]
  const float* inv_freq = nullptr;    // [head_dim / 2], f32
  const int32_t* position = nullptr;  // [rows]
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  int32_t* seq_len = nullptr;  // [rows]
  int rows = 1;
  const int32_t* block_tables = nullptr;  // [rows][max_blocks_per_row], or null (identity)
  int max_blocks_per_row = 0;
};
void rope_and_cache(const RopeCacheArgs& args, cudaStream_t stream);

// out[r][i] = bf16(bf16(silu(g[i])) · g[n + i]) for i < n, with g = gate_up row r ([rows][2n]).
void silu_mul(const void* gate_up, void* out, int64_t n, cudaStream_t stream, int64_t rows = 1);

// picks[r] = the first index of the maximum of logits row r ([rows][n], bf16), one CTA a row.
void argmax_rows(const void* logits, int64_t rows, int64_t n, int32_t* picks, cudaStream_t stream);

// dst[i][n] = src[index[i]][n] for i < count (bf16 rows).
void gather_rows(const void* src, const int32_t* index, int64_t count, int64_t n, void* dst,
                 cudaStream_t stream);

// Per-row block tables for a KV cache in which sequence s owns blocks [s·B, (s+1)·B) (B =
// blocks_per_seq): tables[r][j] = seq[r]·B + j, [rows][B].
void row_block_tables(const int32_t* seq, int64_t rows, int blocks_per_seq, int32_t* tables,
                      cudaStream_t stream);

// Greedy pick over bf16 logits (the first index of the maximum, as torch.argmax): writes it to
// *token and history[*position], then advances *position by one (the end of a decode step).
// Split over up to 64 CTAs; `scratch` (grown on first use, so not while a graph is captured)
// holds their picks and a counter.
void argmax_and_advance(const void* logits, int64_t n, int32_t* token, int32_t* history,
                        int32_t* position, DeviceBuffer& scratch, cudaStream_t stream);

// Keeps the GPU busy for `nanoseconds` (diagnostics: lets the host queue work ahead of it).
void gpu_spin(int64_t nanoseconds, cudaStream_t stream);

// *token = value (a prompt token fed into the next step).
void set_token(int32_t* token, int32_t value, cudaStream_t stream);

}  // namespace nibble::cuda
