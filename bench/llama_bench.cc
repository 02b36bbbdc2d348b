// End-to-end forward of a random-weight model of SmolLM2-135M's shape (hidden 576, 30 layers,
// 9 heads / 3 kv heads, head_dim 64, intermediate 1536, vocab 49152, tied embeddings): one
// decode step with 128 tokens cached, and a 512-token prefill. Speed does not depend on the
// weight values.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "backend/cpu/kernels.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/llama.h"
#include "runtime/kv_cache.h"

namespace {

using namespace nibble;

class RandomCheckpoint : public Checkpoint {
 public:
  explicit RandomCheckpoint(const ModelConfig& c) {
    const int64_t h = c.hidden_size, d = c.head_dim, q = c.num_attention_heads * d,
                  kv = c.num_key_value_heads * d, inter = c.intermediate_size;
    add("model.embed_tokens.weight", {c.vocab_size, h});
    add("model.norm.weight", {h});
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "self_attn.q_proj.weight", {q, h});
      add(p + "self_attn.k_proj.weight", {kv, h});
      add(p + "self_attn.v_proj.weight", {kv, h});
      add(p + "self_attn.o_proj.weight", {h, q});
      add(p + "mlp.gate_proj.weight", {inter, h});
      add(p + "mlp.up_proj.weight", {inter, h});
      add(p + "mlp.down_proj.weight", {h, inter});
      add(p + "input_layernorm.weight", {h});
      add(p + "post_attention_layernorm.weight", {h});
    }
  }
  std::string source() const override { return "random://smollm2-135m-shape"; }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const override {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }
  std::vector<float> load_f32(std::string_view name) const override {
    const CheckpointTensor* t = find(name);
    if (!t) fail("{}: no tensor {}", source(), name);
    size_t n = 1;
    for (int64_t d : t->shape) n *= size_t(d);
    std::vector<float> v(n);
    uint32_t state = uint32_t(std::hash<std::string_view>{}(name));
    const float scale = t->shape.size() == 1 ? 0.0f : 0.05f;
    for (float& x : v) {
      state = state * 1664525u + 1013904223u;
      x = (t->shape.size() == 1 ? 1.0f : 0.0f) +
          scale * (float(state >> 8) / float(1 << 24) - 0.5f);
    }
    return v;
  }

 private:
  void add(const std::string& name, std::vector<int64_t> shape) {
    CheckpointTensor t;
    t.name = name;
    t.type = "F32";
    t.shape = std::move(shape);
    tensors_.push_back(t);
  }
  std::vector<CheckpointTensor> tensors_;
};

ModelConfig smollm2_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 49152;
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.num_hidden_layers = 30;
  c.num_attention_heads = 9;
  c.num_key_value_heads = 3;
  c.head_dim = 64;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 100000.0f;
  c.tie_word_embeddings = true;
  return c;
}

// NIBBLE_BENCH_THREADS=n sizes the global pool (default: all hardware threads).
void configure_threads() {
  static const bool done = [] {
    if (const char* env = std::getenv("NIBBLE_BENCH_THREADS")) {
      ThreadPool::set_global_threads(std::atoi(env));
    }
    return true;
  }();
  (void)done;
}

Model& cached_model(ComputeType type) {
  configure_threads();
  static std::map<ComputeType, std::unique_ptr<Model>> models;
  auto& m = models[type];
  if (!m) {
    const ModelConfig c = smollm2_config();
    m = create_llama_model(c, RandomCheckpoint(c), type);
  }
  return *m;
}

ForwardBatch make_batch(int64_t n_tokens, int64_t n_cached, const std::vector<int32_t>& blocks) {
  ForwardBatch batch;
  for (int64_t i = 0; i < n_tokens; ++i)
    batch.token_ids.push_back(int32_t((i * 7919 + 13) % 49152));
  batch.seqs.push_back({0, n_tokens, n_cached, blocks, true});
  return batch;
}

void run_forward(benchmark::State& state, ComputeType type, int64_t n_tokens, int64_t n_cached) {
  Model& model = cached_model(type);
  const ModelConfig& c = model.config();
  KvCache cache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, 16, 64);
  std::vector<int32_t> blocks;
  for (int64_t i = 0; i * 16 < n_tokens + n_cached; ++i) blocks.push_back(*cache.allocate_block());
  std::vector<float> logits;
  if (n_cached > 0) model.forward(make_batch(n_cached, 0, blocks), cache, logits);
  const ForwardBatch batch = make_batch(n_tokens, n_cached, blocks);
  for (auto _ : state) {
    model.forward(batch, cache, logits);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["tok/s"] = benchmark::Counter(double(n_tokens) * double(state.iterations()),
                                               benchmark::Counter::kIsRate);
  if (n_tokens == 1) {
    // Decode reads every weight once (the tied embedding as lm_head).
    state.counters["weight_GB/s"] =
        benchmark::Counter(double(model.weight_bytes()) * 1e-9 * double(state.iterations()),
                           benchmark::Counter::kIsRate);
  }
  state.SetLabel(cpu::isa_name());
}

void BM_SmolLM2DecodeF32(benchmark::State& state) { run_forward(state, ComputeType::F32, 1, 128); }
void BM_SmolLM2DecodeBf16(benchmark::State& state) {
  run_forward(state, ComputeType::BF16, 1, 128);
}
void BM_SmolLM2Prefill512F32(benchmark::State& state) {
  run_forward(state, ComputeType::F32, 512, 0);
}
void BM_SmolLM2Prefill512Bf16(benchmark::State& state) {
  run_forward(state, ComputeType::BF16, 512, 0);
}
BENCHMARK(BM_SmolLM2DecodeF32)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_SmolLM2DecodeBf16)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_SmolLM2Prefill512F32)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SmolLM2Prefill512Bf16)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
