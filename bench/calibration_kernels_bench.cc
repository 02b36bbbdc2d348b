// The dense kernels of a GPTQ calibration run at SmolLM2-135M shapes, 4096 calibration rows per
// call (what the layer-by-layer forward hands them): the engine's matmul (cpu::linear, what the
// calibration forward used before), the packed calibration GEMM, the Gram (Hessian) kernel, and
// an FMA loop that gives the machine's peak to compare with. GFLOP/s counts 2·M·N·K for the
// GEMMs and M·K² for the Gram kernel (the lower triangle's flops, as in docs/benchmarks.md).
// Run: nibble_microbench --benchmark_filter='Calib|FmaPeak'; NIBBLE_BENCH_THREADS=1 for one core
// (then flops / "CPU" time is the rate per CPU-second, which a loaded machine distorts less).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/thread_pool.h"
#include "quantize/blocked_linear_algebra.h"
#include "quantize/calibration_gemm.h"
#include "quantize/calibration_kernels.h"
#include "quantize/linear_algebra.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kRows = 4096;

void configure_threads() {
  static const bool configured = [] {
    if (const char* env = std::getenv("NIBBLE_BENCH_THREADS"))
      nibble::ThreadPool::set_global_threads(std::atoi(env));
    return true;
  }();
  (void)configured;
}

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "N"});
  // SmolLM2-135M: q/o, k/v, gate or up, down.
  b->Args({576, 576});
  b->Args({576, 192});
  b->Args({576, 1536});
  b->Args({1536, 576});
  b->UseRealTime();
  b->Unit(benchmark::kMillisecond);
}

void BM_CalibEngineLinear(benchmark::State& state) {
  configure_threads();
  const int64_t k = state.range(0), n = state.range(1);
  const std::vector<float> x = random_values(size_t(kRows * k), 1),
                           w = random_values(size_t(n * k), 2);
  const nibble::cpu::DenseMatrix dense(nibble::cpu::WeightType::F32, n, k, w);
  std::vector<float> y(size_t(kRows * n));
  for (auto _ : state) {
    nibble::cpu::linear(dense, nullptr, x.data(), kRows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2e-9 * double(kRows * n * k) * double(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_CalibGemm(benchmark::State& state) {
  configure_threads();
  const int64_t k = state.range(0), n = state.range(1);
  const std::vector<float> x = random_values(size_t(kRows * k), 1),
                           w = random_values(size_t(n * k), 2);
  std::vector<float> y(size_t(kRows * n));
  for (auto _ : state) {
    nibble::quantize::calibration_linear(w.data(), n, k, nullptr, x.data(), k, kRows, y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2e-9 * double(kRows * n * k) * double(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_CalibGram(benchmark::State& state) {
  configure_threads();
  const int64_t k = state.range(0);
  const std::vector<float> x = random_values(size_t(kRows * k), 3);
  std::vector<double> h(size_t(k * k), 0.0);
  for (auto _ : state) {
    nibble::quantize::accumulate_gram(x.data(), kRows, k, h.data());
    benchmark::DoNotOptimize(h.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      1e-9 * double(kRows * k * k) * double(state.iterations()), benchmark::Counter::kIsRate);
}

#if defined(__x86_64__)
// 12 independent FMA chains (more than latency × ports) on one core: the f32 FMA peak.
__attribute__((target("avx2,fma"), noinline)) float fma_chains(int64_t iters) {
  __m256 acc[12];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  __m256 b = _mm256_set1_ps(1e-4f);
  const __m256 c = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
    // An opaque operand: otherwise the compiler may fold the loop away.
    __asm__ volatile("" : "+x"(b));
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(b, c, acc[i]);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

void BM_FmaPeak(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    state.SkipWithError("no AVX2/FMA");
    return;
  }
  constexpr int64_t kIters = 1 << 22;
  for (auto _ : state) benchmark::DoNotOptimize(fma_chains(kIters));
  state.counters["GFLOP/s"] = benchmark::Counter(
      1e-9 * double(kIters) * 12 * 16 * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_FmaPeak)->Unit(benchmark::kMillisecond);
#endif

// GPTQ's upper Cholesky factor of H⁻¹ (one factorisation + one triangular inverse, ~2n³/3 flops)
// on a well-conditioned n × n Hessian: the serial code against the blocked one (Arg 1).
void BM_InverseUpperCholesky(benchmark::State& state) {
  configure_threads();
  const int64_t n = state.range(0);
  const bool blocked = state.range(1) != 0;
  const std::vector<float> r = random_values(size_t(n * 8), 5);
  std::vector<double> h(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    h[size_t(i * n + i)] = double(n);
    for (int64_t j = 0; j < i; ++j) {
      const double v = 0.01 * double(r[size_t((i * 7 + j) % (n * 8))]);
      h[size_t(i * n + j)] = h[size_t(j * n + i)] = v;
    }
  }
  std::vector<double> m;
  for (auto _ : state) {
    m = nibble::quantize::reversed(h, n);
    if (blocked) {
      nibble::quantize::cholesky_lower_blocked(m, n, 128);
      nibble::quantize::invert_lower_blocked(m, n, 128);
    } else {
      nibble::quantize::cholesky_lower_inplace(m, n);
      nibble::quantize::invert_lower_inplace(m, n);
    }
    benchmark::DoNotOptimize(m.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      1e-9 * 2.0 / 3.0 * double(n) * double(n) * double(n) * double(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_InverseUpperCholesky)
    ->ArgNames({"n", "blocked"})
    ->Args({1536, 0})
    ->Args({1536, 1})
    ->Args({4096, 0})
    ->Args({4096, 1})
    ->Args({14336, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

BENCHMARK(BM_CalibEngineLinear)->Apply(gemm_shapes);
BENCHMARK(BM_CalibGemm)->Apply(gemm_shapes);
BENCHMARK(BM_CalibGram)
    ->ArgName("K")
    ->Arg(576)
    ->Arg(1536)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
