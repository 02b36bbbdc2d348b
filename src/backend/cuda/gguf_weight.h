#pragma once
// GGUF block weights on the GPU: Q4_0 and Q8_0 are repacked once at load into the W4A16 / W8A16
// layout (wxa16_linear.h) and run through wxa16_linear.
//
// Both are symmetric integer schemes with one f16 scale per 32 consecutive weights of a row:
// Q4_0 stores q in 0..15 for the value d·(q − 8), which is the signed int4 code q ⊕ 8; Q8_0
// stores the int8 code. So the repacked weight is exact: each weight is d·code in f32, the same
// operations as gguf_dequant's reference, and the W4A16 decode kernels' speed carries over.
#include "backend/cuda/wxa16_linear.h"
#include "quant/scheme.h"

namespace nibble::cuda {

// True for the ggml block types prepare_gguf_weight takes (Q4_0, Q8_0).
bool gguf_weight_supported(int gguf_type);

// The int4/int8 group-32 QuantizedTensor with f16 scales equal to a GgufBlock tensor of type
// Q4_0 or Q8_0 (Error naming `what` and the type otherwise).
quant::QuantizedTensor gguf_to_int_tensor(const quant::QuantizedTensor& blocks, const char* what);

// gguf_to_int_tensor, then prepare_wxa16_weight.
WxA16Weight prepare_gguf_weight(const quant::QuantizedTensor& blocks, const char* what);

}  // namespace nibble::cuda
