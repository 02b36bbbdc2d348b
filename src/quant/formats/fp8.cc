// FP8 weights with tensor / channel / 2-D block scales: quant_method fp8 (§4), fbgemm_fp8
// (§4.3), ModelOpt FP8 (§5.2).
#include <cstring>

#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/reference/dequantize.h"

namespace nibble::quant {

QuantizedTensor load_fp8_weight(const Checkpoint& ckpt, const std::string& prefix,
                                const std::string& method, const std::string& scale_suffix,
                                int64_t block_rows, int64_t block_cols) {
  LayerTensors L(ckpt, prefix, method);
  const CheckpointTensor& weight = L.require("weight");
  const CheckpointTensor& scale = L.require(scale_suffix);
  L.check_rank(weight, 2);
  L.check_type(weight, {"F8_E4M3"});
  L.check_type(scale, {"F32", "BF16", "F16"});
  const int64_t N = weight.shape[0], K = weight.shape[1];
  if (weight.data == nullptr || weight.nbytes != uint64_t(N * K))
    L.fail_layer("tensor '{}' holds {} bytes, expected {}", weight.name, weight.nbytes, N * K);

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  t.elem = ElemType::Fp8E4M3;
  t.scale_dtype = L.scale_dtype(scale);
  allocate_codes(t);
  std::memcpy(t.codes.data(), weight.data, t.codes.size());
  if (block_rows > 0) {
    // Edges that are not whole blocks were quantized as if zero-padded (DeepSeek README).
    L.check_shape(scale, {(N + block_rows - 1) / block_rows, (K + block_cols - 1) / block_cols});
    set_scale_layout(t, block_rows, block_cols);
  } else if (L.numel(scale) == 1) {
    set_scale_layout(t, N, K);
  } else if (scale.shape == std::vector<int64_t>{N} || scale.shape == std::vector<int64_t>{N, 1}) {
    set_scale_layout(t, 1, K);
  } else {
    L.fail_layer("'{}' must be a single value or [{}, 1] per channel, got {} values",
                 L.name(scale_suffix), N, L.numel(scale));
  }
  const std::vector<float> values = L.floats(scale);
  std::memcpy(t.scales.data(), values.data(), t.scales.size() * sizeof(float));
  return t;
}

}  // namespace nibble::quant
