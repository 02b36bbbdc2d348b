#pragma once
// The reference quantizers behind a C++17 interface: the GPU tests compile as C++17 (nvcc cannot
// take fmt's C++20 format-string checks), quant/reference/quantize.h needs C++20's std::span.
#include <cstdint>
#include <vector>

#include "quant/scheme.h"

namespace nibble::gpu_test {

quant::QuantizedTensor reference_rtn_int(const std::vector<float>& w, int64_t rows, int64_t cols,
                                         int bits, int64_t group_size, bool symmetric);
quant::QuantizedTensor reference_fp8(const std::vector<float>& w, int64_t rows, int64_t cols,
                                     bool per_channel);

// GGUF blocks of ggml type `gguf_type` (Q4_0 = 2, Q8_0 = 8, ...) quantized from w by the
// reference (gguf-py's operations), as the GgufBlock QuantizedTensor a GGUF loader produces.
quant::QuantizedTensor reference_gguf_blocks(const std::vector<float>& w, int64_t rows,
                                             int64_t cols, int gguf_type);
// The reference dequantization of a GgufBlock tensor (gguf_dequant), rows × cols f32.
std::vector<float> reference_gguf_dequantize(const quant::QuantizedTensor& t);

}  // namespace nibble::gpu_test
