#pragma once
// GPTQ of a whole Llama model on one GPU: calibration forwards, Hessians and the column updates
// all on the device (gptq_solver.h), layer by layer in GPTQ's true-sequential order, as
// quantize/pipeline.cc runs it on the host: q/k/v from the layer's input, then o from the
// attention computed with the quantized q/k/v, gate/up from the residual after the quantized o,
// down from the activations of the quantized gate/up; the layer's output (through every quantized
// linear) is the next layer's input.
//
// The model's fused linears are quantized as they are held: q|k|v and gate|up share one Hessian,
// and GPTQ never mixes rows, so quantizing the stacked weight is quantizing each part. Each dense
// weight is overwritten with its dequantization, which is what the later stages must see; the
// codes come back on the host. lm_head is not touched (GPTQ's default).
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/cuda/cuda_llama.h"
#include "backend/cuda/gptq_solver.h"

namespace nibble::cuda {

struct GptqCalibration {
  int64_t samples = 128;          // sequences
  int64_t seqlen = 2048;          // tokens per sequence
  int64_t samples_per_chunk = 8;  // sequences per forward (activation memory)
};

struct GptqModelResult {
  // Per layer: qkv, o, gate_up, down (the CudaLlamaLayer order).
  std::vector<GptqLinearResult> linears;
  double seconds = 0.0;          // everything, from the embedding lookup to the last result
  double forward_seconds = 0.0;  // calibration forwards and Hessian accumulation
  double solve_seconds = 0.0;    // Cholesky, column updates, results to the host
};

// `tokens` holds samples × seqlen ids, sequence after sequence. Every linear of every layer must
// be dense bf16. `progress(layer)` is called after each layer.
GptqModelResult gptq_quantize_llama(CudaLlama& model, const std::vector<int32_t>& tokens,
                                    const GptqCalibration& calibration,
                                    const GptqSolverOptions& options,
                                    const std::function<void(int64_t)>& progress = {});

}  // namespace nibble::cuda
