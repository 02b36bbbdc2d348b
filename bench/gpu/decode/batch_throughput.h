#pragma once
// Offline throughput of concurrent requests on the GPU (issue 7's "64 concurrent requests,
// 1024 in / 256 out"): every request arrives at once; their prompts are prefilled in forwards
// of up to `prefill_rows` rows (whole prompts packed together, a longer prompt in chunks), then
// all of them decode together, one batched forward per new token (CudaLlamaBatch, greedy).
#include <nlohmann/json.hpp>

#include <cstdint>

#include "backend/cuda/cuda_llama.h"

namespace nibble::cuda {

struct ThroughputOptions {
  int64_t requests = 64;
  int64_t prompt_tokens = 1024;
  int64_t new_tokens = 256;
  int64_t prefill_rows = 4096;
  int runs = 2;  // the first is a warm-up (cuBLASLt plans, workspaces)
};

// Prompts are random token ids (a fixed seed). Reports, for the median run: prefill input
// tokens/s, decode output tokens/s (the steps after the first token), output tokens/s and total
// tokens/s over the whole run, the decode step's ms (CUDA graphs; and one run without them), and
// the KV cache's bytes.
nlohmann::json batch_throughput(const CudaLlama& model, const ThroughputOptions& options);

}  // namespace nibble::cuda
