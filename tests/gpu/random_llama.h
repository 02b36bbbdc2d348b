#pragma once
// A small random Llama on the GPU for the model-level tests: dense bf16 or W4A16 (asymmetric
// int4, groups of 64) linears, head_dim 64 (the row attention's smallest).
#include <cuda_bf16.h>

#include <cmath>
#include <memory>

#include "backend/cuda/cuda_llama.h"
#include "gpu_test_util.h"
#include "reference_adapter.h"

namespace nibble::gpu_test {

inline constexpr int64_t kHidden = 256, kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 64,
                         kIntermediate = 512, kVocab = 1000;

inline cuda::CudaLinear random_linear(int64_t rows, int64_t cols, bool w4a16) {
  // Uniform in ±sqrt(3/K) keeps each output's variance near its input's.
  const std::vector<float> w = random_floats(size_t(rows * cols), std::sqrt(3.0f / float(cols)));
  cuda::CudaLinear linear;
  linear.rows = rows;
  linear.cols = cols;
  if (w4a16) {
    const auto t = reference_rtn_int(w, rows, cols, 4, 64, /*symmetric=*/false);
    linear.quantized =
        std::make_unique<cuda::WxA16Weight>(cuda::prepare_wxa16_weight(t, "test linear"));
  } else {
    std::vector<__nv_bfloat16> b(w.size());
    for (size_t i = 0; i < w.size(); ++i) b[i] = __float2bfloat16_rn(w[i]);
    linear.dense = to_device(b);
  }
  return linear;
}

inline cuda::DeviceBuffer norm_weight() {
  std::vector<__nv_bfloat16> w(kHidden);
  for (auto& v : w) v = __float2bfloat16_rn(1.0f + random_floats(1, 0.2f)[0]);
  return to_device(w);
}

inline std::unique_ptr<cuda::CudaLlama> random_model(bool w4a16, int64_t max_tokens) {
  cuda::CudaLlamaConfig c;
  c.hidden = kHidden;
  c.n_layers = kLayers;
  c.n_heads = kHeads;
  c.n_kv_heads = kKvHeads;
  c.head_dim = kHeadDim;
  c.intermediate = kIntermediate;
  c.vocab = kVocab;
  for (int64_t i = 0; i < kHeadDim / 2; ++i) {
    c.inv_freq.push_back(float(std::pow(10000.0, -2.0 * double(i) / double(kHeadDim))));
  }
  auto model = std::make_unique<cuda::CudaLlama>(c, max_tokens);
  for (auto& layer : model->layers) {
    layer.attn_norm = norm_weight();
    layer.mlp_norm = norm_weight();
    layer.qkv = random_linear((kHeads + 2 * kKvHeads) * kHeadDim, kHidden, w4a16);
    layer.o = random_linear(kHidden, kHeads * kHeadDim, w4a16);
    layer.gate_up = random_linear(2 * kIntermediate, kHidden, w4a16);
    layer.down = random_linear(kHidden, kIntermediate, w4a16);
  }
  model->embedding = to_device(random_bf16(size_t(kVocab * kHidden), 1.0f));
  model->final_norm = norm_weight();
  model->lm_head = random_linear(kVocab, kHidden, w4a16);
  model->finish_loading();
  return model;
}

}  // namespace nibble::gpu_test
