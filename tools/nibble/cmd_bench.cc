// `nibble bench`: prefill and decode speed of a model on this machine, beside
// the bound the measured memory bandwidth sets for decode (every weight byte is
// read once per token).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>

#include "backend/cpu/kernels.h"
#include "cmd_bench_serve.h"
#include "command.h"
#include "common_options.h"
#include "core/huge_page_allocator.h"
#include "core/memory_stats.h"
#include "core/thread_pool.h"
#include "runtime/kv_cache.h"

namespace nibble::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 128;
  int repeats = 3;
  bool json = false;
};

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Read bandwidth: a sum over a buffer far larger than the caches, on all pool
// threads. The buffer is on huge pages, as the weights are (core/huge_page_allocator.h), so
// the bound is not lowered by TLB misses the decode does not take.
double measure_read_bandwidth() {
  const size_t bytes = size_t(1) << 30;
  HugePageVector<uint64_t> buffer(bytes / sizeof(uint64_t));
  auto& pool = ThreadPool::global();
  pool.parallel_for(int64_t(buffer.size()), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buffer[i] = uint64_t(i);
  });
  std::vector<double> rates;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<uint64_t> partial(pool.size() * 64, 0);
    std::atomic<int> slot{0};
    const auto start = Clock::now();
    pool.parallel_for(int64_t(buffer.size()), int64_t(buffer.size()) / pool.size(),
                      [&](int64_t b, int64_t e) {
                        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                        int64_t i = b;
                        for (; i + 4 <= e; i += 4) {
                          // The hardware prefetchers alone leave bandwidth unused (on the
                          // 2-core VM: ~25 GB/s without, ~35 with); the decode kernels
                          // prefetch too, so the bound must.
                          if ((i & 7) == 0)
                            __builtin_prefetch(buffer.data() + std::min<int64_t>(i + 128, e - 1));
                          s0 += buffer[i];
                          s1 += buffer[i + 1];
                          s2 += buffer[i + 2];
                          s3 += buffer[i + 3];
                        }
                        for (; i < e; ++i) s0 += buffer[i];
                        partial[size_t(slot.fetch_add(1)) * 8 % partial.size()] = s0 + s1 + s2 + s3;
                      });
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    volatile uint64_t sink = std::accumulate(partial.begin(), partial.end(), uint64_t(0));
    (void)sink;
    rates.push_back(double(bytes) / seconds);
  }
  return median(rates);
}

int run_bench(const BenchOptions& o) {
  o.model.apply_threads();
  const MemoryUsage before = current_memory();
  PeakMemorySampler load_memory;
  const auto load_start = Clock::now();
  ModelSource source = o.model.open();
  const ComputeType compute = o.model.compute_type();
  auto model = build_model(source, compute);
  const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
  load_memory.stop();
  const MemoryUsage loaded = current_memory();
  const ModelConfig& config = model->config();
  const KvCacheSpec kv = o.model.kv_cache(source);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, int32_t(config.vocab_size - 1));
  const int64_t block = 16;
  const int64_t n_blocks = (o.prompt_tokens + o.gen_tokens) / block + 2;

  std::vector<double> prefill_rates, decode_rates;
  for (int rep = 0; rep < o.repeats + 1; ++rep) {  // the first run warms caches and is dropped
    KvCache cache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, block,
                  n_blocks, kv.dtype);
    kv.apply(cache);
    SequenceBatch seq;
    for (int64_t i = 0; i < n_blocks; ++i) seq.block_table.push_back(*cache.allocate_block());
    ForwardBatch batch;
    for (int64_t i = 0; i < o.prompt_tokens; ++i) batch.token_ids.push_back(token(rng));
    seq.n_tokens = o.prompt_tokens;
    seq.want_logits = true;
    batch.seqs = {seq};
    std::vector<float> logits;
    auto start = Clock::now();
    model->forward(batch, cache, logits);
    const double prefill_s = std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    for (int64_t i = 0; i < o.gen_tokens; ++i) {
      batch.token_ids = {token(rng)};
      seq.n_tokens = 1;
      seq.n_cached = o.prompt_tokens + i;
      batch.seqs = {seq};
      model->forward(batch, cache, logits);
    }
    const double decode_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (rep == 0) continue;
    prefill_rates.push_back(double(o.prompt_tokens) / prefill_s);
    decode_rates.push_back(double(o.gen_tokens) / decode_s);
  }
  const double prefill = median(prefill_rates);
  const double decode = median(decode_rates);
  const double bandwidth = measure_read_bandwidth();
  // Bytes a decode step must read: the layers and the output layer (not an untied embedding
  // table, of which a step reads one row), plus on average half the KV cache written so far.
  const double kv_bytes = 2.0 * config.num_hidden_layers * config.num_key_value_heads *
                          config.head_dim * double(kv_dtype_bytes(kv.dtype)) *
                          (o.prompt_tokens + o.gen_tokens / 2.0);
  const double bytes_per_token = double(model->step_weight_bytes()) + kv_bytes;
  const double bound = bandwidth / bytes_per_token;
  nlohmann::json j = {{"model", source.path.string()},
                      {"dtype", compute == ComputeType::F32 ? "float32" : "bfloat16"},
                      {"threads", ThreadPool::global().size()},
                      {"isa", cpu::isa_name()},
                      {"prompt_tokens", o.prompt_tokens},
                      {"gen_tokens", o.gen_tokens},
                      {"prefill_tok_s", prefill},
                      {"decode_tok_s", decode},
                      {"bytes_per_decode_token", bytes_per_token},
                      {"measured_read_bandwidth_gb_s", bandwidth / 1e9},
                      {"decode_bound_tok_s", bound},
                      {"decode_effective_gb_s", decode * bytes_per_token / 1e9},
                      {"decode_fraction_of_bound", decode / bound},
                      {"quantization", source.quantization},
                      {"weight_bytes", model->weight_bytes()},
                      {"step_weight_bytes", model->step_weight_bytes()},
                      {"load_seconds", load_s},
                      {"load_peak_anon_bytes", load_memory.peak_anon_bytes() - before.anon_bytes},
                      {"load_peak_rss_bytes", load_memory.peak_rss_bytes()},
                      {"anon_bytes_after_load", loaded.anon_bytes - before.anon_bytes}};
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model %s, %s, %d threads, ISA %s\n", source.path.filename().string().c_str(),
              j["dtype"].get<std::string>().c_str(), ThreadPool::global().size(), cpu::isa_name());
  std::printf(
      "load %.1f s (%s): weights %.1f MB; private memory peak %.1f MB during load, %.1f MB "
      "after\n",
      load_s, source.quantization.empty() ? "dense" : source.quantization.c_str(),
      double(model->weight_bytes()) / 1e6,
      double(load_memory.peak_anon_bytes() - before.anon_bytes) / 1e6,
      double(loaded.anon_bytes - before.anon_bytes) / 1e6);
  std::printf("prefill  %5lld tokens: %8.1f tok/s (median of %d)\n", (long long)o.prompt_tokens,
              prefill, o.repeats);
  std::printf("decode   %5lld tokens: %8.1f tok/s (median of %d)\n", (long long)o.gen_tokens,
              decode, o.repeats);
  std::printf(
      "decode reads %.1f MB/token; measured read bandwidth %.1f GB/s "
      "-> bound %.1f tok/s; "
      "decode reaches %.0f%% of it (%.1f GB/s)\n",
      bytes_per_token / 1e6, bandwidth / 1e9, bound, 100.0 * decode / bound,
      decode * bytes_per_token / 1e9);
  return 0;
}

std::function<int()> setup_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  app.description("Measure prefill and decode speed against the memory-bandwidth bound");
  o->model.add(app);
  app.add_option("--prompt-tokens", o->prompt_tokens)->capture_default_str();
  app.add_option("--gen-tokens", o->gen_tokens)->capture_default_str();
  app.add_option("--repeats", o->repeats)->capture_default_str();
  app.add_flag("--json", o->json);
  const BenchServeCommand serve = add_bench_serve(app);
  return [o, serve] {
    if (serve.app->parsed()) return serve.run();
    return run_bench(*o);
  };
}

NIBBLE_COMMAND(bench, setup_bench);

}  // namespace
}  // namespace nibble::cli
