// Quantized linear layers (make_quantized_linear, threaded) at SmolLM2-135M and Llama-3.2-1B
// shapes, M = 1 (decode) and M = 64 (prefill chunk), reporting GB/s of weight bytes as stored
// (LinearWeight::nbytes: codes + scales + mins). Decode rotates over 1 GiB of weight copies so
// each call streams from memory; BM_MemoryReadBandwidth measures what memory gives
// (a threaded sum over 512 MiB), the bound the decode figures are compared with.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_weight.h"
#include "backend/cpu/quant/quant_linear_options.h"
#include "core/huge_page_allocator.h"
#include "core/numeric.h"
#include "core/thread_pool.h"
#include "formats/gguf/gguf_dequant.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/quantize.h"
#include "quant/scheme.h"

namespace {

using nibble::cpu::LinearWeight;
namespace quant = nibble::quant;
namespace gguf = nibble::gguf;

void configure_threads() {
  // NIBBLE_BENCH_THREADS=n sizes the global pool (default: all hardware threads).
  static const bool configured = [] {
    if (const char* env = std::getenv("NIBBLE_BENCH_THREADS")) {
      nibble::ThreadPool::set_global_threads(std::atoi(env));
    }
    return true;
  }();
  (void)configured;
}

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

enum class Scheme { W4A16, W4A8, W8A16, W8A8, Q4_0, Q4_0A8, Q4_K, Q8_0A8, Fp8, Nf4 };

quant::QuantizedTensor gguf_tensor(gguf::GgmlType type, int64_t n, int64_t k) {
  quant::QuantizedTensor t;
  t.elem = quant::ElemType::GgufBlock;
  t.gguf_type = int(type);
  t.rows = n;
  t.cols = k;
  quant::allocate_codes(t);
  if (gguf::can_quantize(type)) {
    const std::vector<float> w = random_values(size_t(k), 7);
    for (int64_t r = 0; r < n; ++r)
      gguf::quantize_row(type, w.data(), t.codes.data() + r * t.row_bytes, k);
  } else {  // Q4_K: random blocks with finite f16 d / dmin
    std::mt19937 gen(3);
    for (auto& b : t.codes) b = uint8_t(gen());
    for (size_t off = 0; off < t.codes.size(); off += 144) {
      const uint16_t h = nibble::f32_to_f16(0.001f);
      std::memcpy(t.codes.data() + off, &h, 2);
      std::memcpy(t.codes.data() + off + 2, &h, 2);
    }
  }
  return t;
}

struct LayerSource {
  quant::QuantizedTensor weight;
  quant::ActQuant act;
  nibble::cpu::QuantLinearOptions options;
};

LayerSource make_source(Scheme s, const std::vector<float>& w, int64_t n, int64_t k) {
  LayerSource src;
  quant::ActQuant int8;
  int8.kind = quant::ActQuantKind::DynamicPerTokenInt8;
  switch (s) {
    case Scheme::W4A16:
    case Scheme::W4A8:
      // int4 groups of 128 (GPTQ / torchao int4wo-128 shape), f32 scales from RTN.
      src.weight = quant::quantize_rtn_int(w, n, k, {4, 128, true});
      if (s == Scheme::W4A8) src.act = int8;
      break;
    case Scheme::W8A16:
    case Scheme::W8A8:
      src.weight = quant::quantize_rtn_int(w, n, k, {8, -1, true});
      if (s == Scheme::W8A8) src.act = int8;
      break;
    case Scheme::Q4_0:
    case Scheme::Q4_0A8:
      src.weight = gguf_tensor(gguf::GgmlType::Q4_0, n, k);
      src.options.int8_activations_for_weight_only = s == Scheme::Q4_0A8;
      break;
    case Scheme::Q4_K: src.weight = gguf_tensor(gguf::GgmlType::Q4_K, n, k); break;
    case Scheme::Q8_0A8:
      src.weight = gguf_tensor(gguf::GgmlType::Q8_0, n, k);
      src.options.int8_activations_for_weight_only = true;
      break;
    case Scheme::Fp8:
      src.weight = quant::quantize_fp8_e4m3(w, n, k, quant::Fp8Granularity::PerChannel);
      break;
    case Scheme::Nf4: {
      quant::QuantizedTensor& t = src.weight;
      t.elem = quant::ElemType::Nf4;
      t.rows = n;
      t.cols = k;
      quant::allocate_codes(t);
      std::mt19937 gen(5);
      for (auto& b : t.codes) b = uint8_t(gen());
      quant::set_scale_layout(t, 1, 64);
      for (float& v : t.scales) v = 0.01f;
      break;
    }
  }
  return src;
}

std::unique_ptr<LinearWeight> make_layer(const LayerSource& src) {
  return nibble::cpu::make_quantized_linear(src.weight, src.act, nibble::cpu::WeightType::BF16,
                                            src.options);
}

void run_quant(benchmark::State& state, Scheme scheme) {
  configure_threads();
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  if (scheme == Scheme::Q4_K && k % 256 != 0) {
    state.SkipWithError("Q4_K needs K to be a multiple of 256");
    return;
  }
  const std::vector<float> w = random_values(size_t(n * k), 42);
  const LayerSource source = make_source(scheme, w, n, k);
  std::vector<std::unique_ptr<LinearWeight>> layers;
  layers.push_back(make_layer(source));
  const size_t bytes = layers.front()->nbytes();
  // Enough copies (1 GiB) to exceed any last-level cache for decode shapes: a VM may report a
  // smaller L3 than its host has (stacked-cache parts hold up to 768 MiB), and 96 MiB of copies
  // did read faster than DRAM on a VM that reported 32 MiB. NIBBLE_BENCH_HOT=1 keeps one copy,
  // so the weights stay in cache and the figure is the kernel's compute ceiling.
  const bool hot = std::getenv("NIBBLE_BENCH_HOT") != nullptr;
  const size_t copies = m == 1 && !hot ? std::max<size_t>(1, (size_t(1) << 30) / bytes) : 1;
  while (layers.size() < copies) layers.push_back(make_layer(source));
  const std::vector<float> x = random_values(size_t(m * k), 9);
  std::vector<float> y(size_t(m * n));
  size_t next = 0;
  for (auto _ : state) {
    layers[next]->forward(x.data(), m, nullptr, y.data());
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(double(bytes) * 1e-9 * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(m * n * k) * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["bits/w"] = double(bytes) * 8.0 / double(n * k);
  state.SetLabel(layers.front()->describe());
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N"});
  for (int64_t m : {1, 64}) {
    // SmolLM2-135M: fused gate/up (576 -> 3072), down (1536 -> 576).
    b->Args({m, 576, 3072});
    b->Args({m, 1536, 576});
    // Llama-3.2-1B: gate/up (2048 -> 8192), down (8192 -> 2048).
    b->Args({m, 2048, 8192});
    b->Args({m, 8192, 2048});
  }
  b->UseRealTime();
  b->Unit(benchmark::kMicrosecond);
}

#define NIBBLE_QUANT_BENCH(name)                                                    \
  void BM_Quant_##name(benchmark::State& state) { run_quant(state, Scheme::name); } \
  BENCHMARK(BM_Quant_##name)->Apply(shapes)

NIBBLE_QUANT_BENCH(W4A16);
NIBBLE_QUANT_BENCH(W4A8);
NIBBLE_QUANT_BENCH(W8A16);
NIBBLE_QUANT_BENCH(W8A8);
NIBBLE_QUANT_BENCH(Q4_0);
NIBBLE_QUANT_BENCH(Q4_0A8);
NIBBLE_QUANT_BENCH(Q4_K);
NIBBLE_QUANT_BENCH(Q8_0A8);
NIBBLE_QUANT_BENCH(Fp8);
NIBBLE_QUANT_BENCH(Nf4);

// Sum of 512 MiB of floats over the thread pool: the read bandwidth decode can hope for.
void BM_MemoryReadBandwidth(benchmark::State& state) {
  configure_threads();
  const size_t count = size_t(512) << 18;  // 512 MiB of f32
  // On huge pages, as the weights are, so TLB misses do not lower the bound.
  nibble::HugePageVector<float> data(count, 1.0f);
  nibble::ThreadPool& pool = nibble::ThreadPool::global();
  const int64_t chunks = 64;
  std::vector<float> partial(static_cast<size_t>(chunks));
  for (auto _ : state) {
    pool.parallel_for(chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const float* p = data.data() + size_t(c) * (count / size_t(chunks));
        // 32 independent sums (four 8-wide vectors once vectorised) so the loop is bound by
        // loads, not by the add latency.
        float s[32] = {};
        const size_t n = count / size_t(chunks);
        for (size_t i = 0; i < n; i += 32) {
          // Software prefetch 1 KiB ahead, as the decode kernels do: without it the hardware
          // prefetchers alone leave bandwidth unused.
          __builtin_prefetch(p + std::min(i + 256, n - 1));
          for (int j = 0; j < 32; ++j) s[j] += p[i + size_t(j)];
        }
        float total = 0.0f;
        for (float v : s) total += v;
        partial[size_t(c)] = total;
      }
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.counters["GB/s"] = benchmark::Counter(double(count) * 4e-9 * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MemoryReadBandwidth)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
