#pragma once
// Exporters of a QuantizedModel as an HF checkpoint directory, in the layouts of
// checkpoint-formats.md and with the quantization config written as the consumers read it:
//  - compressed-tensors: pack-quantized (W4A16/W8A16, group or channel, sym or asym, act-order
//    g_idx), int-quantized (W8A8), float-quantized (FP8_DYNAMIC, FP8, FP8_BLOCK);
//  - gptq: v1 (qweight / qzeros − 1 / f16 scales / g_idx), config in config.json and
//    quantize_config.json, as GPTQModel writes them;
//  - awq: AutoAWQ GEMM (interleaved nibbles along N, raw zero points, f16 scales);
//  - fp8: quant_method "fp8" (per-tensor with static input_scale, or 128×128 blocks with
//    weight_scale_inv);
//  - modelopt: ModelOpt's unified HF export, quant_algo NVFP4 or FP8 (per-tensor weight scale,
//    static per-tensor input scale), in config.json and hf_quant_config.json.
#include <filesystem>

#include "quant/scheme.h"
#include "quantize/pipeline.h"
#include "quantize/recipe.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

// The dtype integer scales must have so the in-memory model equals the export: f16 for gptq
// and awq (what AutoGPTQ / AutoAWQ write), the model dtype for compressed-tensors.
quant::ScaleDType export_scale_dtype(const ModelSource& source, const Recipe& recipe);

void export_model(const ModelSource& source, const QuantizedModel& model, const Recipe& recipe,
                  const std::filesystem::path& out, bool force);

}  // namespace nibble::quantize
