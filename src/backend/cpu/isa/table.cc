// The kernel table of this ISA (see kernel_table.h); the dispatcher in kernels.cc picks one.
#include "backend/cpu/kernel_table.h"

namespace nibble::cpu::NIBBLE_ISA {

const char* isa_name();
void matmul_f32(const MatmulArgs& a, int64_t n_begin, int64_t n_end);
void matmul_bf16(const MatmulArgs& a, int64_t n_begin, int64_t n_end);
void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* out);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void add_inplace(float* y, const float* x, int64_t n);
void f32_to_bf16(const float* x, int64_t n, uint16_t* out, float* rounded);
void attention(const AttentionArgs& a);
void quant_matmul_a16(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end);
void quant_matmul_a8(const QuantMatmulArgs& a, int64_t n_begin, int64_t n_end);

// Filled field by field at run time: a constant-initialised table would be fine too, but this
// keeps the layout checks in one place (kernel_table.h) and needs no static constructors.
void fill_kernel_table(KernelTable& t) {
  t.name = isa_name();
  t.matmul_f32 = matmul_f32;
  t.matmul_bf16 = matmul_bf16;
  t.rmsnorm = rmsnorm;
  t.silu_mul = silu_mul;
  t.add_inplace = add_inplace;
  t.f32_to_bf16 = f32_to_bf16;
  t.attention = attention;
  t.quant_matmul_a16 = quant_matmul_a16;
  t.quant_matmul_a8 = quant_matmul_a8;
}

}  // namespace nibble::cpu::NIBBLE_ISA
