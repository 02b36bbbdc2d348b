#pragma once
// nibble_gpu_decode --scheme w4a16-gptq: the checkpoint's decoder linears, loaded as bf16, are
// quantized by GPTQ on the GPU (backend/cuda/gptq_llama.h: symmetric int4, the --group-size, the
// usual 1% dampening, act-order on request: the kernels then gather x into the weight's group
// order) on random calibration tokens, then repacked into the W4A16 kernel layout; lm_head takes
// w4a16's RTN.
#include <nlohmann/json.hpp>

#include <cstdint>

#include "backend/cuda/cuda_llama.h"

namespace nibble::cuda {

struct GptqSchemeOptions {
  int64_t group_size = 128;
  int64_t samples = 128;
  int64_t seqlen = 2048;
  int64_t samples_per_chunk = 8;
  bool act_order = false;
  uint64_t seed = 0;  // of the calibration tokens (uniform over the vocabulary)
};

// Quantizes and swaps the linears; returns the timings and calibration as JSON.
nlohmann::json apply_gptq_scheme(CudaLlama& model, const GptqSchemeOptions& options);

}  // namespace nibble::cuda
