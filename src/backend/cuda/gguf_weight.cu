// Host-side conversion of GGUF Q4_0 / Q8_0 blocks into the W4A16 / W8A16 layout.
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/gguf_weight.h"
#include "quant/reference/dequantize.h"

namespace nibble::cuda {
namespace {

constexpr int64_t kBlockElems = 32;
// ggml type ids (gguf::GgmlType; its header pulls nlohmann/json, which nvcc should not parse).
constexpr int kGgmlQ4_0 = 2;
constexpr int kGgmlQ8_0 = 8;

float f16_bits_to_float(const uint8_t* p) {
  __half_raw raw;
  raw.x = uint16_t(p[0] | (p[1] << 8));
  return __half2float(__half(raw));
}

}  // namespace

bool gguf_weight_supported(int gguf_type) {
  return gguf_type == kGgmlQ4_0 || gguf_type == kGgmlQ8_0;
}

quant::QuantizedTensor gguf_to_int_tensor(const quant::QuantizedTensor& blocks, const char* what) {
  NIBBLE_CHECK(blocks.elem == quant::ElemType::GgufBlock,
               "{}: expected a GGUF block tensor for the CUDA GGUF path", what);
  NIBBLE_CHECK(gguf_weight_supported(blocks.gguf_type),
               "{}: ggml type {} has no CUDA kernel yet (Q4_0 and Q8_0 do)", what,
               blocks.gguf_type);
  const bool q4 = blocks.gguf_type == kGgmlQ4_0;
  const int64_t block_bytes = q4 ? 18 : 34;
  NIBBLE_CHECK(blocks.cols % kBlockElems == 0, "{}: {} columns is not a whole number of blocks",
               what, blocks.cols);
  const int64_t blocks_per_row = blocks.cols / kBlockElems;
  NIBBLE_CHECK(blocks.row_bytes == blocks_per_row * block_bytes &&
                   int64_t(blocks.codes.size()) == blocks.rows * blocks.row_bytes,
               "{}: {} code bytes for [{}, {}] ggml type {}", what, blocks.codes.size(),
               blocks.rows, blocks.cols, blocks.gguf_type);

  quant::QuantizedTensor t;
  t.elem = q4 ? quant::ElemType::Int4 : quant::ElemType::Int8;
  t.rows = blocks.rows;
  t.cols = blocks.cols;
  quant::allocate_codes(t);
  quant::set_scale_layout(t, 1, kBlockElems);
  t.scale_dtype = quant::ScaleDType::F16;
  for (int64_t n = 0; n < t.rows; ++n) {
    const uint8_t* row = blocks.codes.data() + n * blocks.row_bytes;
    uint8_t* out = t.codes.data() + n * t.row_bytes;
    for (int64_t b = 0; b < blocks_per_row; ++b) {
      const uint8_t* block = row + b * block_bytes;
      t.scales[size_t(n * t.scale_cols + b)] = f16_bits_to_float(block);
      const uint8_t* qs = block + 2;
      if (q4) {
        // ggml: element i < 16 is the low nibble of qs[i], element i + 16 its high nibble;
        // nibble-packed rows put element 2j in the low nibble of byte j.
        uint8_t* dst = out + b * (kBlockElems / 2);
        for (int i = 0; i < 16; i += 2) {
          dst[i / 2] = uint8_t(((qs[i] & 0xF) ^ 8) | (((qs[i + 1] & 0xF) ^ 8) << 4));
          dst[8 + i / 2] = uint8_t(((qs[i] >> 4) ^ 8) | (((qs[i + 1] >> 4) ^ 8) << 4));
        }
      } else {
        std::copy(qs, qs + kBlockElems, out + b * kBlockElems);
      }
    }
  }
  quant::validate(t, what);
  return t;
}

WxA16Weight prepare_gguf_weight(const quant::QuantizedTensor& blocks, const char* what) {
  return prepare_wxa16_weight(gguf_to_int_tensor(blocks, what), what);
}

}  // namespace nibble::cuda
