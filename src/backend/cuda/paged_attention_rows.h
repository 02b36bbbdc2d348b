#pragma once
// Attention of many rows at once over the paged KV cache, on tensor cores: the prefill of
// prompts and the batched decode step (CudaLlamaBatch). Rows are grouped into tiles of up to 16
// consecutive positions of one sequence; a CTA takes one tile and one KV head, each warp one
// query head of the group, and streams the sequence's keys and values [0, last position of the
// tile] through shared memory in 64-token chunks (cp.async, double-buffered) with an online
// softmax: S = Q·Kᵀ and O += P·V by mma.m16n8k16, row i masked to positions ≤ its own. K and V
// are read once per tile and KV head for all the group's heads and the tile's rows, instead of
// once per row and head (paged_attention_decode with one query per row).
//
// KV layout as paged_attention.h: bf16 blocks of 16 slots, [block][kv_head][slot][head_dim].
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace nibble::cuda {

inline constexpr int kRowTileRows = 16;

// A tile: rows [row_begin, row_begin + rows) of the batch, all of one sequence, at positions
// first_position, first_position + 1, ... (rows ≤ kRowTileRows).
struct RowTile {
  int32_t row_begin = 0;
  int32_t rows = 0;
  int32_t first_position = 0;
};

// Greedy tiles over rows in order: a tile ends at 16 rows, at a change of sequence, or where a
// position is not the previous one plus one.
std::vector<RowTile> make_row_tiles(const std::vector<int32_t>& seq,
                                    const std::vector<int32_t>& position);

struct PagedRowsAttentionArgs {
  const void* q = nullptr;  // bf16; row r's head h at q + r·q_stride + h·head_dim
  int64_t q_stride = 0;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  // Per row, [rows][max_blocks_per_row] physical blocks; a tile reads its first row's table.
  const int32_t* block_tables = nullptr;
  int max_blocks_per_row = 0;
  const RowTile* tiles = nullptr;  // on the device
  int n_tiles = 0;
  void* out = nullptr;  // bf16 [rows][n_heads][head_dim]
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;    // 64 or 128
  float scale = 1.0f;  // softmax scale, usually 1/sqrt(head_dim)
};

// Errors name the unsupported parameter (head_dim, group size of at most 8).
void paged_attention_rows(const PagedRowsAttentionArgs& args, cudaStream_t stream);

}  // namespace nibble::cuda
