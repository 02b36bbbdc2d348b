// Row-tile attention (prefill and batched decode) against an f64 CPU reference on fresh random
// bf16 inputs: shuffled physical blocks, GQA groups of 1..8, head_dim 64 and 128, prompt runs
// that cross 64-token chunks and 16-row tiles, decode rows at long positions, output poisoned.
//
// Bound per element: rel = 2^-8 (the bf16 output rounding) and abs = 2^-8·Σ_t p_t·|v_t|: the
// probabilities enter P·V rounded to bf16 (relative error ≤ 2^-9 each), the rest is f32.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cuda/paged_attention_rows.h"
#include "gpu_test_util.h"

namespace nibble::gpu_test {
namespace {

using cuda::DeviceBuffer;

// `count` rows of sequence `seq` at positions first, first + 1, ...
struct Run {
  int seq, first, count;
};

struct RowsCase {
  int n_heads, n_kv_heads, head_dim;
  std::vector<Run> runs;
};

void run_rows_case(const RowsCase& c) {
  constexpr int kBlock = 16;
  std::vector<int32_t> row_seq, row_position;
  int num_seqs = 0, max_len = 0;
  for (const Run& run : c.runs) {
    for (int i = 0; i < run.count; ++i) {
      row_seq.push_back(run.seq);
      row_position.push_back(run.first + i);
    }
    num_seqs = std::max(num_seqs, run.seq + 1);
    max_len = std::max(max_len, run.first + run.count);
  }
  const int rows = int(row_seq.size());
  const int max_blocks = (max_len + kBlock - 1) / kBlock;
  const int n_blocks = num_seqs * max_blocks + 3;
  const int d = c.head_dim;
  std::vector<int32_t> physical(static_cast<size_t>(n_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng());
  std::vector<int32_t> seq_tables(size_t(num_seqs * max_blocks));
  for (size_t i = 0; i < seq_tables.size(); ++i) seq_tables[i] = physical[i];
  std::vector<int32_t> row_tables(size_t(rows * max_blocks));
  for (int r = 0; r < rows; ++r) {
    std::copy_n(seq_tables.begin() + row_seq[size_t(r)] * max_blocks, max_blocks,
                row_tables.begin() + r * max_blocks);
  }
  const size_t cache_elems = size_t(n_blocks) * c.n_kv_heads * kBlock * d;
  const auto k_cache = random_bf16(cache_elems, 1.0f);
  const auto v_cache = random_bf16(cache_elems, 1.0f);
  // Queries sit in wider rows (q heads, then room for k and v), as in a batch forward's qkv.
  const int64_t q_stride = int64_t(c.n_heads + 2 * c.n_kv_heads) * d;
  const auto q = random_bf16(size_t(rows) * size_t(q_stride), 1.0f);
  const float scale = 1.0f / std::sqrt(float(d));

  auto at = [&](const std::vector<__nv_bfloat16>& cache, int s, int kv, int t, int e) {
    const int32_t block = seq_tables[size_t(s * max_blocks + t / kBlock)];
    return double(__bfloat162float(
        cache[((size_t(block) * c.n_kv_heads + kv) * kBlock + t % kBlock) * d + e]));
  };
  const size_t out_elems = size_t(rows) * c.n_heads * d;
  Reference ref;
  ref.value.assign(out_elems, 0.0);
  ref.absdot.assign(out_elems, 0.0);
  const int group = c.n_heads / c.n_kv_heads;
  for (int r = 0; r < rows; ++r) {
    const int s = row_seq[size_t(r)], len = row_position[size_t(r)] + 1;
    for (int h = 0; h < c.n_heads; ++h) {
      const int kv = h / group;
      std::vector<double> p(static_cast<size_t>(len));
      for (int t = 0; t < len; ++t) {
        double dot = 0.0;
        for (int e = 0; e < d; ++e) {
          dot += double(__bfloat162float(q[size_t(r) * q_stride + size_t(h) * d + e])) *
                 at(k_cache, s, kv, t, e);
        }
        p[size_t(t)] = dot * double(scale);
      }
      const double mx = *std::max_element(p.begin(), p.end());
      double sum = 0.0;
      for (double& v : p) sum += (v = std::exp(v - mx));
      for (int e = 0; e < d; ++e) {
        double o = 0.0, o_abs = 0.0;
        for (int t = 0; t < len; ++t) {
          const double v = at(v_cache, s, kv, t, e);
          o += p[size_t(t)] * v;
          o_abs += p[size_t(t)] * std::fabs(v);
        }
        ref.value[(size_t(r) * c.n_heads + h) * d + e] = o / sum;
        ref.absdot[(size_t(r) * c.n_heads + h) * d + e] = o_abs / sum;
      }
    }
  }

  const std::vector<cuda::RowTile> tiles = cuda::make_row_tiles(row_seq, row_position);
  auto dk = to_device(k_cache), dv = to_device(v_cache), dq = to_device(q);
  auto dtables = to_device(row_tables), dtiles = to_device(tiles);
  DeviceBuffer out(out_elems * 2);
  cuda::PagedRowsAttentionArgs args;
  args.q = dq.get();
  args.q_stride = q_stride;
  args.k_cache = dk.get();
  args.v_cache = dv.get();
  args.block_tables = dtables.get<int32_t>();
  args.max_blocks_per_row = max_blocks;
  args.tiles = dtiles.get<cuda::RowTile>();
  args.n_tiles = int(tiles.size());
  args.out = out.get();
  args.n_heads = c.n_heads;
  args.n_kv_heads = c.n_kv_heads;
  args.head_dim = d;
  args.scale = scale;
  poison(out);
  cuda::paged_attention_rows(args, nullptr);
  char what[160];
  std::snprintf(what, sizeof(what), "row attention %dq/%dkv d%d, %d rows in %zu tiles, max len %d",
                c.n_heads, c.n_kv_heads, d, rows, tiles.size(), max_len);
  expect_close(what, to_host<__nv_bfloat16>(out, out_elems), ref, 1.0 / 256, 1.0 / 256);
}

GPU_TEST(paged_attention_rows_match_reference) {
  std::uniform_int_distribution<int> position(0, 1300);
  std::vector<Run> decode;
  for (int s = 0; s < 12; ++s) decode.push_back({s, position(rng()), 1});
  const RowsCase cases[] = {
      // A whole prompt of 100 (tiles of 16 across chunk edges), a chunk of a second prompt
      // from position 57, and decode rows beside them.
      {32, 8, 128, {{0, 0, 100}, {1, 57, 30}, {2, 700, 1}, {3, 64, 1}, {4, 0, 1}}},
      {32, 8, 128, decode},                            // a batched decode step, Llama-3-8B heads
      {9, 3, 64, {{0, 0, 37}, {1, 5, 1}}},             // SmolLM2-135M heads
      {8, 1, 128, {{0, 120, 20}, {1, 300, 3}}},        // a group of 8
      {4, 4, 64, {{0, 0, 17}, {0, 17, 1}}},            // no grouping; a tile break by row count
      {4, 2, 128, {{1, 3, 5}, {0, 3, 5}, {1, 8, 2}}},  // tiles break where the sequence changes
  };
  for (const auto& c : cases) run_rows_case(c);
}

GPU_TEST(make_row_tiles_groups_consecutive_positions) {
  const std::vector<int32_t> seq = {0, 0, 0, 1, 1, 0, 2, 2, 2};
  const std::vector<int32_t> pos = {4, 5, 6, 0, 2, 7, 9, 10, 11};
  const auto tiles = cuda::make_row_tiles(seq, pos);
  // {0,3,4} {3,1,0} {4,1,2} {5,1,7} {6,3,9}
  GPU_EXPECT(tiles.size() == 5, "%zu tiles", tiles.size());
  if (tiles.size() == 5) {
    GPU_EXPECT(tiles[0].rows == 3 && tiles[0].first_position == 4, "tile 0: %d rows from %d",
               tiles[0].rows, tiles[0].first_position);
    GPU_EXPECT(tiles[2].row_begin == 4 && tiles[2].rows == 1, "tile 2: row %d, %d rows",
               tiles[2].row_begin, tiles[2].rows);
    GPU_EXPECT(tiles[4].row_begin == 6 && tiles[4].rows == 3 && tiles[4].first_position == 9,
               "tile 4: row %d, %d rows from %d", tiles[4].row_begin, tiles[4].rows,
               tiles[4].first_position);
  }
  std::vector<int32_t> long_seq(40, 0), long_pos(40);
  std::iota(long_pos.begin(), long_pos.end(), 0);
  const auto long_tiles = cuda::make_row_tiles(long_seq, long_pos);
  GPU_EXPECT(long_tiles.size() == 3 && long_tiles[2].rows == 8, "%zu tiles of a 40-row prompt",
             long_tiles.size());
}

}  // namespace
}  // namespace nibble::gpu_test
