// NVIDIA ModelOpt NVFP4 weights: checkpoint-formats.md §5.2 (FP8 goes through fp8.cc).
#include <cstring>

#include "quant/formats/loaders.h"
#include "quant/formats/tensor_access.h"
#include "quant/reference/dequantize.h"

namespace nibble::quant {

QuantizedTensor load_modelopt_nvfp4(const Checkpoint& ckpt, const std::string& prefix) {
  LayerTensors L(ckpt, prefix, "modelopt_fp4");
  const CheckpointTensor& weight = L.require("weight");
  const CheckpointTensor& scale = L.require("weight_scale");
  const CheckpointTensor& scale2 = L.require("weight_scale_2");
  L.check_rank(weight, 2);
  L.check_type(weight, {"U8"});
  L.check_type(scale, {"F8_E4M3"});
  const int64_t N = weight.shape[0], K = weight.shape[1] * 2;
  if (K % 16 != 0) L.fail_layer("K={} is not a multiple of the NVFP4 block of 16", K);
  L.check_shape(scale, {N, K / 16});
  if (weight.data == nullptr || weight.nbytes != uint64_t(N * K / 2))
    L.fail_layer("tensor '{}' holds {} bytes, expected {}", weight.name, weight.nbytes, N * K / 2);

  QuantizedTensor t;
  t.rows = N;
  t.cols = K;
  t.elem = ElemType::Fp4E2M1;
  t.scale_dtype = ScaleDType::E4M3;
  allocate_codes(t);
  // Same byte layout as ours: even element in the low nibble, rows of K/2 bytes.
  std::memcpy(t.codes.data(), weight.data, t.codes.size());
  set_scale_layout(t, 1, 16);
  const std::vector<float> values = L.floats(scale);
  std::memcpy(t.scales.data(), values.data(), t.scales.size() * sizeof(float));
  t.global_scale = L.scalar(scale2);
  return t;
}

}  // namespace nibble::quant
