// Dense matmul y = x·Wᵀ through the threaded linear() at SmolLM2-135M and Llama-3.2-1B shapes.
// M=1 reports GB/s of weights streamed (decode is bandwidth-bound: weights rotate over copies
// larger than the L3 so each call reads from memory); M>1 reports GFLOP/s.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/ops.h"
#include "core/thread_pool.h"

namespace {

using nibble::cpu::DenseMatrix;
using nibble::cpu::WeightType;

std::vector<float> random_values(size_t n) {
  std::mt19937 gen(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

void run_matmul(benchmark::State& state, WeightType type) {
  // NIBBLE_BENCH_THREADS=n sizes the global pool (default: all hardware threads).
  static const bool configured = [] {
    if (const char* env = std::getenv("NIBBLE_BENCH_THREADS")) {
      nibble::ThreadPool::set_global_threads(std::atoi(env));
    }
    return true;
  }();
  (void)configured;
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const std::vector<float> w = random_values(size_t(n * k));
  const size_t bytes = size_t(n * k) * (type == WeightType::BF16 ? 2 : 4);
  // Enough copies to exceed a 32 MiB L3 for decode shapes.
  const size_t copies = m == 1 ? std::max<size_t>(1, (size_t(96) << 20) / bytes) : 1;
  std::vector<DenseMatrix> weights;
  for (size_t i = 0; i < copies; ++i) weights.emplace_back(type, n, k, w);
  const std::vector<float> x = random_values(size_t(m * k));
  std::vector<float> y(size_t(m * n));
  size_t next = 0;
  for (auto _ : state) {
    nibble::cpu::linear(weights[next], nullptr, x.data(), m, y.data());
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(m * n * k) * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(double(bytes) * 1e-9 * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
  state.SetLabel(nibble::cpu::isa_name());
}

void BM_MatmulF32(benchmark::State& state) { run_matmul(state, WeightType::F32); }
void BM_MatmulBf16(benchmark::State& state) { run_matmul(state, WeightType::BF16); }

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N"});
  // SmolLM2-135M: q/o (576x576), fused qkv (960), gate/up (1536), down (K=1536), lm_head.
  for (int64_t m : {1, 512}) {
    b->Args({m, 576, 576});
    b->Args({m, 576, 960});
    b->Args({m, 576, 3072});
    b->Args({m, 1536, 576});
  }
  b->Args({1, 576, 49152});
  // Llama-3.2-1B: q/o, gate/up, down.
  b->Args({1, 2048, 2048});
  b->Args({1, 2048, 8192});
  b->Args({1, 8192, 2048});
  b->Args({128, 2048, 8192});
  b->UseRealTime();
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_MatmulF32)->Apply(shapes);
BENCHMARK(BM_MatmulBf16)->Apply(shapes);

}  // namespace
