#pragma once
// On-disk tensors of one quantized linear layer → QuantizedTensor, bit-exact (layouts in
// shared reference checkpoint-formats.md §1–§5). Each loader checks every dtype and shape
// against the layer's declared parameters and fails naming the layer and tensor.
#include <cstdint>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "quant/scheme.h"

namespace nibble::quant {

// GPTQ: qweight I32 [K·b/32, N] packed along K, qzeros I32 [G_n, N·b/32] packed along N,
// scales [G_n, N], g_idx I32 [K].
struct GptqParams {
  int bits = 4;              // 2, 3, 4, 8
  int64_t group_size = 128;  // -1: per-channel
  bool sym = true;
  bool desc_act = false;
  bool v2 = false;  // checkpoint_format "gptq_v2": zeros stored as z, not z - 1
};
QuantizedTensor load_gptq(const Checkpoint& ckpt, const std::string& prefix, const GptqParams& p);

// AutoAWQ GEMM: qweight I32 [K, N/8], qzeros I32 [K/G, N/8], both packed along N with the
// nibble order [0,2,4,6,1,3,5,7]; scales [K/G, N].
struct AwqParams {
  int bits = 4;
  int64_t group_size = 128;
};
QuantizedTensor load_awq(const Checkpoint& ckpt, const std::string& prefix, const AwqParams& p);

// compressed-tensors quantization arguments of the weights (QuantizationArgs).
struct CtWeightArgs {
  int bits = 8;
  bool is_float = false;  // "type": "float"
  bool symmetric = true;
  std::string strategy;    // tensor | channel | group | block | tensor_group
  int64_t group_size = 0;  // group / tensor_group
  int64_t block_rows = 0;  // block
  int64_t block_cols = 0;
  bool group_actorder = false;  // actorder "group": weight_g_idx is stored
};
// pack-quantized: weight_packed I32 [N, ⌈K·b/32⌉], weight_shape I64 [2], weight_scale,
// weight_zero_point I32 [⌈N·b/32⌉, groups] (asym), weight_g_idx (actorder group).
QuantizedTensor load_ct_pack_quantized(const Checkpoint& ckpt, const std::string& prefix,
                                       const CtWeightArgs& args);
// int-quantized / float-quantized / naive-quantized: weight I8 or F8_E4M3 [N, K] plus
// weight_scale (and weight_zero_point I8 when asymmetric).
QuantizedTensor load_ct_unpacked(const Checkpoint& ckpt, const std::string& prefix,
                                 const CtWeightArgs& args);

// FP8 weight F8_E4M3 [N, K] with a scale tensor named `scale_suffix`, whose shape gives the
// granularity: one value (per-tensor), [N] or [N, 1] (per-channel), or [⌈N/bn⌉, ⌈K/bk⌉] when
// block_rows > 0 (2-D blocks). Used by quant_method fp8 (weight_scale / weight_scale_inv),
// fbgemm_fp8 and ModelOpt FP8.
QuantizedTensor load_fp8_weight(const Checkpoint& ckpt, const std::string& prefix,
                                const std::string& method, const std::string& scale_suffix,
                                int64_t block_rows = 0, int64_t block_cols = 0);

// ModelOpt NVFP4: weight U8 [N, K/2] (even element in the low nibble), weight_scale F8_E4M3
// [N, K/16], weight_scale_2 F32 scalar (a multiplier).
QuantizedTensor load_modelopt_nvfp4(const Checkpoint& ckpt, const std::string& prefix);

// bitsandbytes 4-bit (quant_method "bitsandbytes", load_in_4bit): packed U8 weight (high nibble
// first), absmax per `blocksize` values (nested: U8 codes + nested_absmax/nested_quant_map and
// an offset), quant_map, and the JSON quant state. NF4 → ElemType::Nf4 with the absmax as
// per-group scales; FP4 → Fp8E4M3 codes (12 × the table value) with scales absmax / 12.
struct BnbParams {
  bool fp4 = false;  // bnb_4bit_quant_type "fp4"
};
QuantizedTensor load_bnb_4bit(const Checkpoint& ckpt, const std::string& prefix,
                              const BnbParams& p);
// Whether `prefix` stores a bitsandbytes 4-bit quant state, and its [N, K] from that state.
bool is_bnb_4bit_layer(const Checkpoint& ckpt, const std::string& prefix);
std::vector<int64_t> bnb_4bit_shape(const Checkpoint& ckpt, const std::string& prefix);

}  // namespace nibble::quant
