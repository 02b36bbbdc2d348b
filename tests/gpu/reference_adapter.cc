#include "reference_adapter.h"

#include "formats/gguf/gguf_dequant.h"
#include "quant/reference/quantize.h"

namespace nibble::gpu_test {

quant::QuantizedTensor reference_rtn_int(const std::vector<float>& w, int64_t rows, int64_t cols,
                                         int bits, int64_t group_size, bool symmetric) {
  quant::RtnIntOptions options;
  options.bits = bits;
  options.group_size = group_size;
  options.symmetric = symmetric;
  return quant::quantize_rtn_int(w, rows, cols, options);
}

quant::QuantizedTensor reference_fp8(const std::vector<float>& w, int64_t rows, int64_t cols,
                                     bool per_channel) {
  return quant::quantize_fp8_e4m3(
      w, rows, cols,
      per_channel ? quant::Fp8Granularity::PerChannel : quant::Fp8Granularity::PerTensor);
}

quant::QuantizedTensor reference_gguf_blocks(const std::vector<float>& w, int64_t rows,
                                             int64_t cols, int gguf_type) {
  const auto type = static_cast<gguf::GgmlType>(gguf_type);
  quant::QuantizedTensor t;
  t.elem = quant::ElemType::GgufBlock;
  t.gguf_type = gguf_type;
  t.rows = rows;
  t.cols = cols;
  t.row_bytes = int64_t(gguf::row_bytes(type, cols));
  t.codes.assign(size_t(rows * t.row_bytes), 0);
  for (int64_t n = 0; n < rows; ++n) {
    gguf::quantize_row(type, w.data() + n * cols, t.codes.data() + n * t.row_bytes, cols);
  }
  return t;
}

std::vector<float> reference_gguf_dequantize(const quant::QuantizedTensor& t) {
  const auto type = static_cast<gguf::GgmlType>(t.gguf_type);
  std::vector<float> out(size_t(t.rows * t.cols));
  for (int64_t n = 0; n < t.rows; ++n) {
    gguf::dequantize_row(type, t.codes.data() + n * t.row_bytes, out.data() + n * t.cols, t.cols);
  }
  return out;
}

}  // namespace nibble::gpu_test
