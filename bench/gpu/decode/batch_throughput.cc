#include "batch_throughput.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "backend/cuda/cuda_llama_batch.h"
#include "core/error.h"

namespace nibble::cuda {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct RunTimes {
  double prefill_s = 0.0, decode_s = 0.0, total_s = 0.0;
  std::vector<int32_t> first_tokens;  // each request's first new token (a determinism check)
};

RunTimes run_once(CudaLlamaBatch& batch, const std::vector<std::vector<int32_t>>& prompts,
                  const ThroughputOptions& o) {
  RunTimes t;
  const auto start = clock_type::now();
  const int64_t n = int64_t(prompts.size());
  std::vector<int32_t> last(size_t(n), 0);
  std::vector<CudaBatchRow> rows;
  std::vector<int32_t> sampled_seq;
  auto flush = [&] {
    if (rows.empty()) return;
    const std::vector<int32_t> picks = batch.forward(rows);
    for (size_t i = 0; i < picks.size(); ++i) last[size_t(sampled_seq[i])] = picks[i];
    rows.clear();
    sampled_seq.clear();
  };
  for (int64_t s = 0; s < n; ++s) {
    const auto& prompt = prompts[size_t(s)];
    for (int64_t i = 0; i < int64_t(prompt.size()); ++i) {
      if (int64_t(rows.size()) == o.prefill_rows) flush();
      const bool sample = i + 1 == int64_t(prompt.size());
      rows.push_back({int32_t(s), prompt[size_t(i)], int32_t(i), sample});
      if (sample) sampled_seq.push_back(int32_t(s));
    }
  }
  flush();
  t.prefill_s = seconds_since(start);
  t.first_tokens = last;
  const auto decode_start = clock_type::now();
  for (int64_t step = 1; step < o.new_tokens; ++step) {
    for (int64_t s = 0; s < n; ++s) {
      rows.push_back({int32_t(s), last[size_t(s)], int32_t(o.prompt_tokens + step - 1), true});
      sampled_seq.push_back(int32_t(s));
    }
    flush();
  }
  t.decode_s = seconds_since(decode_start);
  t.total_s = seconds_since(start);
  return t;
}

}  // namespace

nlohmann::json batch_throughput(const CudaLlama& model, const ThroughputOptions& o) {
  NIBBLE_CHECK(o.requests > 0 && o.prompt_tokens > 0 && o.new_tokens > 0 && o.runs > 0 &&
                   o.prefill_rows >= o.requests,
               "throughput: {} requests of {} + {} tokens, {} prefill rows (≥ requests), {} runs",
               o.requests, o.prompt_tokens, o.new_tokens, o.prefill_rows, o.runs);
  CudaLlamaBatchLimits limits;
  limits.max_seqs = o.requests;
  limits.max_tokens = o.prompt_tokens + o.new_tokens;
  limits.max_rows = o.prefill_rows;
  limits.max_sampled = o.requests;
  CudaLlamaBatch batch(model, limits);

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, int32_t(model.config().vocab) - 1);
  std::vector<std::vector<int32_t>> prompts(size_t(o.requests));
  for (auto& p : prompts) {
    for (int64_t i = 0; i < o.prompt_tokens; ++i) p.push_back(token(rng));
  }
  std::vector<RunTimes> runs;
  for (int r = 0; r < o.runs; ++r) runs.push_back(run_once(batch, prompts, o));
  const bool deterministic = std::all_of(runs.begin(), runs.end(), [&](const RunTimes& t) {
    return t.first_tokens == runs.front().first_tokens;
  });
  // One more run with every kernel launched from the host, for the graphs' share.
  batch.set_cuda_graphs(false);
  const RunTimes eager = run_once(batch, prompts, o);
  batch.set_cuda_graphs(true);
  if (runs.size() > 1) runs.erase(runs.begin());
  std::sort(runs.begin(), runs.end(),
            [](const RunTimes& a, const RunTimes& b) { return a.total_s < b.total_s; });
  const RunTimes& t = runs[runs.size() / 2];
  const double n = double(o.requests);
  nlohmann::json out;
  out["requests"] = o.requests;
  out["prompt_tokens"] = o.prompt_tokens;
  out["new_tokens"] = o.new_tokens;
  out["prefill_rows"] = o.prefill_rows;
  out["kv_cache_bytes"] = batch.kv_cache_bytes();
  out["prefill_s"] = t.prefill_s;
  out["decode_s"] = t.decode_s;
  out["total_s"] = t.total_s;
  out["prefill_tokens_per_s"] = n * double(o.prompt_tokens) / t.prefill_s;
  out["decode_step_ms"] = o.new_tokens > 1 ? t.decode_s * 1e3 / double(o.new_tokens - 1) : 0.0;
  out["decode_tokens_per_s"] = o.new_tokens > 1 ? n * double(o.new_tokens - 1) / t.decode_s : 0.0;
  out["output_tokens_per_s"] = n * double(o.new_tokens) / t.total_s;
  out["total_tokens_per_s"] = n * double(o.prompt_tokens + o.new_tokens) / t.total_s;
  out["runs_first_tokens_equal"] = deterministic;
  out["eager_decode_step_ms"] =
      o.new_tokens > 1 ? eager.decode_s * 1e3 / double(o.new_tokens - 1) : 0.0;
  out["eager_prefill_s"] = eager.prefill_s;
  out["eager_first_tokens_equal"] = eager.first_tokens == runs.front().first_tokens;
  return out;
}

}  // namespace nibble::cuda
