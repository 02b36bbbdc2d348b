// The batched forward (prefill of whole prompts, chunked prefill mixed with decode rows, batched
// decode) against the batch-1 decode step on the same random weights: both must give the same
// logits up to the rounding of their different kernels (GEMV at one row, the streaming /
// cuBLASLt paths at many), for dense bf16 and W4A16 weights.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cuda/cuda_llama.h"
#include "backend/cuda/cuda_llama_batch.h"
#include "gpu_test_util.h"
#include "random_llama.h"
#include "reference_adapter.h"

namespace nibble::gpu_test {
namespace {

using cuda::CudaBatchRow;
using cuda::DeviceBuffer;

// Relative Frobenius difference of two logit rows, and whether their argmax agrees where the
// reference's top two are more than `gap` apart (near-ties may flip under rounding).
void expect_logits_close(const std::string& what, const float* got, const std::vector<float>& want,
                         double bound) {
  double diff = 0.0, norm = 0.0;
  size_t got_top = 0, want_top = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
    if (!(got[i] <= got[got_top])) got_top = i;  // NaN lands here and fails below
    if (want[i] > want[want_top]) want_top = i;
  }
  float second = -INFINITY;
  for (size_t i = 0; i < want.size(); ++i) {
    if (i != want_top) second = std::max(second, want[i]);
  }
  const double rel = std::sqrt(diff / norm);
  GPU_EXPECT(rel <= bound, "%s: relative logit difference %.4f > %.4f", what.c_str(), rel, bound);
  const bool clear = want[want_top] - second > 0.05 * std::sqrt(norm / double(want.size()));
  GPU_EXPECT(!clear || got_top == want_top, "%s: argmax %zu, batch-1 step %zu", what.c_str(),
             got_top, want_top);
}

void check_batch_against_step(bool w4a16) {
  const std::vector<int> prompt_lengths = {5, 19, 40};
  const int chunk = 23;  // sequence 2's prompt is prefilled in two forwards
  const int decode_steps = 4;
  const int64_t max_tokens = 64;
  auto model = random_model(w4a16, max_tokens);
  cuda::CudaLlamaBatchLimits limits;
  limits.max_seqs = 4;
  limits.max_tokens = max_tokens;
  limits.max_rows = 96;
  limits.max_sampled = 8;
  cuda::CudaLlamaBatch batch(*model, limits);

  std::vector<std::vector<int32_t>> tokens(prompt_lengths.size());
  std::uniform_int_distribution<int32_t> pick(0, int32_t(kVocab) - 1);
  for (size_t s = 0; s < tokens.size(); ++s) {
    for (int i = 0; i < prompt_lengths[s]; ++i) tokens[s].push_back(pick(rng()));
  }
  // logits[s][i]: the batch path's logits after sequence s's token i (sampled rows only).
  std::vector<std::vector<std::vector<float>>> logits(tokens.size());
  auto run = [&](const std::vector<CudaBatchRow>& rows) {
    const std::vector<int32_t> picks = batch.forward(rows);
    const std::vector<float> all = batch.sampled_logits();
    size_t k = 0;
    for (const CudaBatchRow& row : rows) {
      if (!row.sample) continue;
      const float* l = all.data() + k * size_t(kVocab);
      logits[size_t(row.seq)].emplace_back(l, l + kVocab);
      tokens[size_t(row.seq)].push_back(picks[k++]);  // greedy continuation
    }
  };
  // Forward 1: sequences 0 and 1 whole, the first chunk of sequence 2.
  std::vector<CudaBatchRow> rows;
  for (int s = 0; s < 3; ++s) {
    const int end = s == 2 ? chunk : prompt_lengths[size_t(s)];
    for (int i = 0; i < end; ++i) {
      rows.push_back({s, tokens[size_t(s)][size_t(i)], i, s < 2 && i == end - 1});
    }
  }
  run(rows);
  // Forward 2: decode rows of 0 and 1 beside the rest of sequence 2's prompt.
  rows.clear();
  for (int s = 0; s < 2; ++s) {
    const int pos = int(tokens[size_t(s)].size()) - 1;
    rows.push_back({s, tokens[size_t(s)].back(), pos, true});
  }
  for (int i = chunk; i < prompt_lengths[2]; ++i) {
    rows.push_back({2, tokens[2][size_t(i)], i, i == prompt_lengths[2] - 1});
  }
  run(rows);
  // Batched decode of all three.
  for (int step = 0; step < decode_steps; ++step) {
    rows.clear();
    for (int s = 0; s < 3; ++s) {
      const int pos = int(tokens[size_t(s)].size()) - 1;
      rows.push_back({s, tokens[size_t(s)].back(), pos, true});
    }
    run(rows);
  }

  // The batch-1 step over the same tokens.
  const double bound = w4a16 ? 0.03 : 0.02;
  for (size_t s = 0; s < tokens.size(); ++s) {
    model->reset();
    const size_t prompt = size_t(prompt_lengths[s]);
    size_t checked = 0;
    for (size_t i = 0; i + 1 < tokens[s].size(); ++i) {
      model->step(tokens[s][i], /*use_graph=*/false);
      if (i + 1 < prompt) continue;
      expect_logits_close(
          (w4a16 ? "w4a16 seq " : "bf16 seq ") + std::to_string(s) + " pos " + std::to_string(i),
          logits[s][checked++].data(), model->logits(), bound);
    }
    GPU_EXPECT(checked == logits[s].size(), "seq %zu: %zu of %zu sampled rows checked", s, checked,
               logits[s].size());
  }
}

// Graph replays against eager forwards, bit for bit: decode steps of a steady batch (eager, then
// captured, then replayed), a prompt forward between them (which drops the graphs) and the
// decode steps again (captured anew).
GPU_TEST(cuda_llama_batch_graphs_match_eager) {
  const int64_t max_tokens = 64;
  auto model = random_model(/*w4a16=*/true, max_tokens);
  cuda::CudaLlamaBatchLimits limits;
  limits.max_seqs = 3;
  limits.max_tokens = max_tokens;
  limits.max_rows = 32;
  limits.max_sampled = 3;
  cuda::CudaLlamaBatch graphs(*model, limits), eager(*model, limits);
  eager.set_cuda_graphs(false);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(kVocab) - 1);
  std::vector<int32_t> last(3, 0), position(3, 0);
  auto prompt = [&](int seq, int length) {
    std::vector<CudaBatchRow> rows;
    for (int i = 0; i < length; ++i) rows.push_back({seq, pick(rng()), i, i == length - 1});
    position[size_t(seq)] = length;
    return rows;
  };
  auto decode = [&](int n) {
    std::vector<CudaBatchRow> rows;
    for (int s = 0; s < n; ++s) rows.push_back({s, last[size_t(s)], position[size_t(s)]++, true});
    return rows;
  };
  int forward_index = 0;
  auto both = [&](const std::vector<CudaBatchRow>& rows) {
    const std::vector<int32_t> a = graphs.forward(rows), b = eager.forward(rows);
    const std::vector<float> la = graphs.sampled_logits(), lb = eager.sampled_logits();
    GPU_EXPECT(a == b && la == lb, "forward %d (%zu rows): graph and eager logits differ",
               forward_index, rows.size());
    for (size_t i = 0; i < a.size(); ++i) last[size_t(rows[i].seq)] = a[i];
    ++forward_index;
  };
  both(prompt(0, 9));
  both(prompt(1, 4));
  for (int step = 0; step < 4; ++step) both(decode(2));
  both(prompt(2, 12));
  for (int step = 0; step < 4; ++step) both(decode(3));
}

GPU_TEST(cuda_llama_batch_matches_step_bf16) { check_batch_against_step(false); }
GPU_TEST(cuda_llama_batch_matches_step_w4a16) { check_batch_against_step(true); }

GPU_TEST(cuda_llama_batch_rejects_bad_rows) {
  auto model = random_model(false, 32);
  cuda::CudaLlamaBatchLimits limits;
  limits.max_seqs = 2;
  limits.max_tokens = 32;
  limits.max_rows = 4;
  limits.max_sampled = 1;
  cuda::CudaLlamaBatch batch(*model, limits);
  auto rejects = [&](std::vector<CudaBatchRow> rows, const char* needle) {
    try {
      batch.forward(rows);
      GPU_EXPECT(false, "no error for '%s'", needle);
    } catch (const std::exception& e) {
      GPU_EXPECT(std::string(e.what()).find(needle) != std::string::npos, "'%s' lacks '%s'",
                 e.what(), needle);
    }
  };
  rejects({{2, 1, 0, false}}, "sequence 2");
  rejects({{0, int32_t(kVocab), 0, false}}, "vocabulary");
  rejects({{0, 1, 32, false}}, "position 32");
  rejects({{0, 1, 0, true}, {1, 1, 0, true}}, "sampled rows");
  rejects(std::vector<CudaBatchRow>(5), "5 rows");
}

}  // namespace
}  // namespace nibble::gpu_test
