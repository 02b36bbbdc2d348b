// Paged decode attention against an f64 CPU reference on fresh random bf16 inputs: shuffled
// physical blocks, GQA groups of 1..8, head_dim 64 and 128, sequences from 1 token to several
// partitions (the split over the sequence and its merge), output poisoned first.
//
// Bound per element: rel = 2^-8 (the bf16 output rounding is ≤ 2^-8·|y|/(1 + 2^-8), so ratios
// near 0.9 of the bound are normal) and abs = 2^-12·Σ_t p_t·|v_t| (f32 scores, exponentials and
// sums: relative errors ~2^-20 per step).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cuda/paged_attention.h"
#include "gpu_test_util.h"

namespace nibble::gpu_test {
namespace {

using cuda::DeviceBuffer;

struct AttentionCase {
  int n_heads, n_kv_heads, head_dim;
  std::vector<int> seq_lens;
};

void run_attention_case(const AttentionCase& c) {
  constexpr int kBlock = cuda::kPagedAttentionBlockSize;
  const int num_seqs = int(c.seq_lens.size());
  const int max_len = *std::max_element(c.seq_lens.begin(), c.seq_lens.end());
  const int max_blocks = (max_len + kBlock - 1) / kBlock;
  const int n_blocks = num_seqs * max_blocks + 3;
  const int d = c.head_dim;
  // Physical blocks handed out in a random order, as a long-running cache would.
  std::vector<int32_t> physical(static_cast<size_t>(n_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng());
  std::vector<int32_t> tables(size_t(num_seqs * max_blocks), -1);
  for (int s = 0, next = 0; s < num_seqs; ++s) {
    for (int b = 0; b < (c.seq_lens[size_t(s)] + kBlock - 1) / kBlock; ++b) {
      tables[size_t(s * max_blocks + b)] = physical[size_t(next++)];
    }
  }
  const size_t cache_elems = size_t(n_blocks) * c.n_kv_heads * kBlock * d;
  const auto k_cache = random_bf16(cache_elems, 1.0f);
  const auto v_cache = random_bf16(cache_elems, 1.0f);
  const auto q = random_bf16(size_t(num_seqs) * c.n_heads * d, 1.0f);
  const float scale = 1.0f / std::sqrt(float(d));

  auto at = [&](const std::vector<__nv_bfloat16>& cache, int s, int kv, int t, int e) {
    const int32_t block = tables[size_t(s * max_blocks + t / kBlock)];
    return double(__bfloat162float(
        cache[((size_t(block) * c.n_kv_heads + kv) * kBlock + t % kBlock) * d + e]));
  };
  Reference ref;
  ref.value.assign(q.size(), 0.0);
  ref.absdot.assign(q.size(), 0.0);
  const int group = c.n_heads / c.n_kv_heads;
  for (int s = 0; s < num_seqs; ++s) {
    const int len = c.seq_lens[size_t(s)];
    for (int h = 0; h < c.n_heads; ++h) {
      const int kv = h / group;
      std::vector<double> p(static_cast<size_t>(len));
      for (int t = 0; t < len; ++t) {
        double dot = 0.0;
        for (int e = 0; e < d; ++e) {
          dot += double(__bfloat162float(q[(size_t(s) * c.n_heads + h) * d + e])) *
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
        ref.value[(size_t(s) * c.n_heads + h) * d + e] = o / sum;
        ref.absdot[(size_t(s) * c.n_heads + h) * d + e] = o_abs / sum;
      }
    }
  }

  auto dk = to_device(k_cache), dv = to_device(v_cache), dq = to_device(q);
  auto dtables = to_device(tables), dlens = to_device(c.seq_lens);
  DeviceBuffer out(q.size() * 2);
  cuda::PagedAttentionWorkspace ws;
  cuda::PagedAttentionArgs args;
  args.q = dq.get();
  args.k_cache = dk.get();
  args.v_cache = dv.get();
  args.block_tables = dtables.get<int32_t>();
  args.seq_lens = dlens.get<int32_t>();
  args.out = out.get();
  args.num_seqs = num_seqs;
  args.n_heads = c.n_heads;
  args.n_kv_heads = c.n_kv_heads;
  args.head_dim = d;
  args.max_blocks_per_seq = max_blocks;
  args.max_seq_len = max_len;
  args.scale = scale;
  for (int repeat = 0; repeat < 2; ++repeat) {
    poison(out);
    cuda::paged_attention_decode(args, ws, nullptr);
    char what[160];
    std::snprintf(what, sizeof(what),
                  "paged attention %dq/%dkv d%d, %d seqs, max len %d, min partition %d #%d",
                  c.n_heads, c.n_kv_heads, d, num_seqs, max_len,
                  cuda::paged_attention_tuning().min_partition, repeat);
    expect_close(what, to_host<__nv_bfloat16>(out, q.size()), ref, 1.0 / 256, 1.0 / 4096);
  }
}

GPU_TEST(paged_attention_decode_matches_reference) {
  // Many sequences keep the full 512-token partition (ragged lengths across its edges); few
  // sequences shrink it to 64 (more partitions to merge); short ones take the single pass.
  std::vector<int> many(40);
  std::uniform_int_distribution<int> length(1, 1100);
  for (int& len : many) len = length(rng());
  many[0] = 512, many[1] = 513, many[2] = 1024, many[3] = 1025;
  const AttentionCase cases[] = {
      {32, 8, 128, many},                    // Llama-3-8B heads, 512-token partitions
      {32, 8, 128, {1, 17, 300, 512, 513}},  // 64-token partitions
      {9, 3, 64, {5, 1200, 64}},             // SmolLM2-135M heads; three partitions
      {8, 1, 128, {2049, 33}},               // a group of 8 (MQA-like), five partitions
      {4, 4, 64, {100}},                     // no grouping
      {4, 2, 128, {40, 64, 7}},              // one partition: no merge
  };
  for (const auto& c : cases) run_attention_case(c);
}

// Batch-1 decode of a short context (the end-to-end step) at each smallest partition.
GPU_TEST(paged_attention_small_partitions_match_reference) {
  cuda::PagedAttentionTuning& tuning = cuda::paged_attention_tuning();
  const int saved = tuning.min_partition;
  const AttentionCase cases[] = {
      {32, 8, 128, {208}}, {32, 8, 128, {1, 17, 300}}, {9, 3, 64, {5, 200}}, {8, 1, 128, {33}}};
  for (const int min_partition : {16, 32, 64}) {
    tuning.min_partition = min_partition;
    for (const auto& c : cases) run_attention_case(c);
  }
  tuning.min_partition = saved;
}

GPU_TEST(paged_attention_refuses_unsupported_head_dim) {
  cuda::PagedAttentionWorkspace ws;
  cuda::PagedAttentionArgs args;
  args.num_seqs = 1;
  args.n_heads = 4;
  args.n_kv_heads = 4;
  args.head_dim = 96;
  args.max_seq_len = 1;
  std::string message;
  try {
    cuda::paged_attention_decode(args, ws, nullptr);
  } catch (const Error& e) {
    message = e.what();
  }
  GPU_EXPECT(message.find("head_dim 96") != std::string::npos, "message: '%s'", message.c_str());
}

}  // namespace
}  // namespace nibble::gpu_test
