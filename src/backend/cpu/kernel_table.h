#pragma once
// The function table every CPU ISA fills in. This header holds only plain structs so that the
// per-ISA translation units (compiled with -mavx512f etc.) emit no shared inline functions: an
// inline function emitted by an AVX-512 object could be picked by the linker for the whole
// program and then crash on an AVX2-only machine.
#include <cstdint>

namespace nibble::cpu {

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for m in [0, m_rows) and n in [n_begin, n_end).
// Weights are row-major [N, K] (PyTorch orientation). For bf16 weights the activations are
// given twice: as bf16 (x_bf16, for dot-product instructions) and as the f32 value of that same
// bf16 number (x), so every ISA computes with the same rounded activations.
struct MatmulArgs {
  const float* x = nullptr;
  const uint16_t* x_bf16 = nullptr;  // only for bf16 weights
  int64_t ldx = 0;                   // elements between rows of x (and of x_bf16)
  int64_t m_rows = 0;
  int64_t k = 0;
  const void* w = nullptr;  // float or uint16_t (bf16) rows of length k
  int64_t ldw = 0;          // elements between rows of w
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};
using MatmulFn = void (*)(const MatmulArgs& args, int64_t n_begin, int64_t n_end);

// Attention of one query head over `n_ctx` cached positions of one KV head. Position j lives in
// block block_table[j / block_size], slot j % block_size; its key starts at
// keys + block * block_stride + slot * head_dim (values likewise).
struct AttentionArgs {
  const float* q = nullptr;  // [head_dim]
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t block_stride = 0;
  const int32_t* block_table = nullptr;
  int64_t block_size = 0;
  int64_t n_ctx = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;
  float* scores = nullptr;  // scratch of at least n_ctx floats
  float* out = nullptr;     // [head_dim]
};

struct KernelTable {
  const char* name = nullptr;
  MatmulFn matmul_f32 = nullptr;
  MatmulFn matmul_bf16 = nullptr;
  // out = x * rsqrt(mean(x^2) + eps) * weight, the sum of squares accumulated in f32.
  void (*rmsnorm)(const float* x, const float* weight, int64_t n, float eps, float* out) = nullptr;
  // out[i] = silu(gate[i]) * up[i]
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out) = nullptr;
  // y[i] += x[i]
  void (*add_inplace)(float* y, const float* x, int64_t n) = nullptr;
  // Round to nearest even; also writes the f32 value of each rounded number to `rounded`.
  void (*f32_to_bf16)(const float* x, int64_t n, uint16_t* out, float* rounded) = nullptr;
  void (*attention)(const AttentionArgs& args) = nullptr;
};

}  // namespace nibble::cpu
