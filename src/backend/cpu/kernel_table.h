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

// Quantized linear kernels over a weight repacked by backend/cpu/quant/packed_weight.h.
// Codes come in chunks of 32 elements along K (K padded to a multiple of 32 with zero
// activations). A 4-bit chunk is 16 bytes: byte j holds element j in its low nibble and element
// j + 16 in its high nibble (ggml's Q4_0 order: one AND and one shift give two 16-lane halves).
// An 8-bit chunk is 32 bytes in element order.
// The int8-activation kernels take 4-bit codes in a wider form (`nibbles64`): 64 elements in 32
// bytes, byte j holding element j in its low nibble and element j + 32 in its high one. One
// 256-bit load, one AND and one shift then give two 32-lane halves that line up with two plain
// 32-byte loads of the activations, where the 16-byte form needs a broadcast and a variable
// shift per 32 elements. An odd last chunk (K / 32 odd) keeps the 16-byte form.
enum class QuantCodes : uint8_t {
  U4Sym,    // 4-bit, value = nibble - 8
  U4,       // 4-bit, value = nibble
  S8,       // 8-bit two's complement
  Fp8E4M3,  // 8-bit OCP e4m3 (the weights hold no NaN codes)
  Fp8E5M2,  // 8-bit e5m2
  Nf4,      // 4-bit index into bitsandbytes' NF4 table
  Fp4E2M1,  // 4-bit e2m1, sign in bit 3
};

// w[n, k] = d[n, k / G] * value(code[n, k]) + mn[n, k / G] (mn only when `mins` is set).
// d and mn are f16 when `params_f16`, else f32. G = group_size: 16 or a multiple of 32.
//  - quant_matmul_a16: y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]), x in f32.
//  - quant_matmul_a8: y[m, n] = x_scale[m] * sum_g (d_g * sum_{k in g} value * xq[m, k]
//    + mn_g * xsum[m, g]) (+ bias[n]), xq int8 in [-127, 127], xsum[m, g] = sum_{k in g} xq[m, k];
//    only for U4Sym, U4, S8 and G a multiple of 32. With per-group activation scales
//    (x_group_scale, s = x_group_scale[m, g]; x_scale and xsum unused):
//    y[m, n] = sum_g (d_g * s * sum_{k in g} value * xq[m, k] + mn_g * xgsum[m, g]) (+ bias[n]),
//    xgsum[m, g] = s * sum_{k in g} xq[m, k].
// The kernels apply mins (and U4Sym's - 8) once per group through the per-group activation
// sums, which the caller provides whenever the codes are U4Sym or `mins` is set.
struct QuantMatmulArgs {
  const float* x = nullptr;        // a16: [m_rows, ldx]
  const float* xgsum = nullptr;    // a16, G >= 32: [m_rows, n_groups] sums of x over each group
                                   // (a8 with x_group_scale: the scaled sums of xq)
  const int8_t* xq = nullptr;      // a8: [m_rows, ldx]
  const float* x_scale = nullptr;  // a8: [m_rows]
  const float* x_group_scale = nullptr;  // a8: [m_rows, n_groups], or null (per-row x_scale)
  const int32_t* xsum = nullptr;         // a8: [m_rows, n_groups] sums of xq over each group
  int64_t ldx = 0;
  int64_t m_rows = 0;
  int64_t k = 0;  // padded: a multiple of 32
  QuantCodes codes_kind = QuantCodes::U4Sym;
  const uint8_t* codes = nullptr;  // [N, code_row_bytes]
  int64_t code_row_bytes = 0;
  bool nibbles64 = false;        // 4-bit codes in the 64-element form (a8 only, G = 32 or 64 | G)
  const void* scales = nullptr;  // [N, n_groups]
  const void* mins = nullptr;    // [N, n_groups] or null
  bool params_f16 = false;
  int64_t group_size = 32;
  int64_t n_groups = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};
using QuantMatmulFn = void (*)(const QuantMatmulArgs& args, int64_t n_begin, int64_t n_end);

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
  QuantMatmulFn quant_matmul_a16 = nullptr;
  QuantMatmulFn quant_matmul_a8 = nullptr;
};

}  // namespace nibble::cpu
