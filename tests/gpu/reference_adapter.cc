#include "reference_adapter.h"

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

}  // namespace nibble::gpu_test
