#pragma once
// A Llama-architecture decoder resident on one GPU, batch 1: embedding, per layer RMSNorm →
// fused QKV linear → RoPE + paged KV write (bf16) → paged decode attention → O linear →
// residual + RMSNorm → fused gate/up linear → SiLU·mul → down linear, then the final norm,
// lm_head and a greedy argmax, all on the device. Linears are dense bf16 (cuBLASLt), W4A16 /
// W8A16 (wxa16_linear) or FP8 W8A8 with dynamic per-token activations (fp8_linear). The prompt goes
// through the same one-token step (prefill is not separate).
//
// A step reads the token and position from device memory and advances them itself, so the
// whole step is captured once into a CUDA graph and replayed; the host only launches.
//
// Loading is the caller's: it fills `layers`, `embedding`, `final_norm` and `lm_head` (see
// bench/gpu/decode for the safetensors loader), then calls finish_loading().
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/fp8_linear.h"
#include "backend/cuda/int8_linear.h"
#include "backend/cuda/lt_gemm.h"
#include "backend/cuda/paged_attention.h"
#include "backend/cuda/wxa16_linear.h"

namespace nibble::cuda {

struct CudaLlamaConfig {
  int64_t hidden = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate = 0;
  int64_t vocab = 0;
  float rms_eps = 1e-5f;
  std::vector<float> inv_freq;  // RoPE frequencies [head_dim / 2], scaling already applied
};

// y[N] = W[N, K]·x: dense bf16 [N][K], a repacked W4A16/W8A16 weight or an FP8 weight.
struct CudaLinear {
  int64_t rows = 0;
  int64_t cols = 0;
  DeviceBuffer dense;                      // bf16 [rows][cols] when not quantized
  std::unique_ptr<WxA16Weight> quantized;  // non-null for W4A16 / W8A16
  std::unique_ptr<Fp8Weight> fp8;          // non-null for FP8 W8A8 (cuBLASLt)
  // Optional second copy of FP8 codes in the bulk-copy GEMV's layout (wxa16_linear.h, `fp8`),
  // used for the batch-1 step where that path runs.
  std::unique_ptr<WxA16Weight> fp8_gemv;
  std::unique_ptr<Int8Weight> int8;  // non-null for W8A8 int8 (cuBLASLt)

  size_t weight_bytes() const {
    if (quantized) return quantized->stream_bytes();
    if (fp8) return fp8->codes.bytes() + fp8->scales.bytes();
    if (int8) return int8->codes.bytes() + int8->scales.bytes();
    return dense.bytes();
  }
};

struct CudaLlamaLayer {
  DeviceBuffer attn_norm;  // bf16 [hidden]
  DeviceBuffer mlp_norm;   // bf16 [hidden]
  CudaLinear qkv;          // [q heads | k heads | v heads] rows
  CudaLinear o;
  CudaLinear gate_up;  // [gate rows | up rows]
  CudaLinear down;
};

class CudaLlama {
 public:
  // `max_tokens`: KV cache capacity (prompt + generated), a multiple of 16 after rounding up.
  CudaLlama(CudaLlamaConfig config, int64_t max_tokens);
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  const CudaLlamaConfig& config() const { return config_; }
  std::vector<CudaLlamaLayer> layers;
  DeviceBuffer embedding;  // bf16 [vocab][hidden]
  DeviceBuffer final_norm;
  CudaLinear lm_head;
  // Validates shapes; allocates the KV cache and activations.
  void finish_loading();
  // Bytes of weights a step streams (all linears, norms, one embedding row).
  size_t step_weight_bytes() const;

  // Forgets the sequence (position 0). Cheap: the KV cache is overwritten, not cleared.
  void reset();
  // One token through the model at the current position: `token` ≥ 0 feeds that token, -1
  // feeds the previous step's greedy pick. Asynchronous on stream(); with use_graph the step is
  // captured on first use and replayed after (the first call with use_graph runs eagerly first,
  // so workspaces and cuBLASLt plans exist before capture).
  void step(int32_t token, bool use_graph);
  int64_t position() const { return position_; }
  // Synchronizing reads: the last step's logits (bf16 → f32), its greedy pick, and the picks of
  // positions [0, position()).
  std::vector<float> logits() const;
  int32_t last_token() const;
  std::vector<int32_t> history() const;
  cudaStream_t stream() const { return stream_; }

  // Diagnostics: one eager step (`token` as in step()) with a CUDA event after every operation,
  // returning each operation's GPU time in launch order. A spin kernel runs first so that the
  // host queues the whole step before the GPU starts it: the times are the kernels' own plus the
  // stream's gaps between kernels, not the host's launch rate.
  struct OpTime {
    const char* op;       // embedding, attn_norm, qkv, rope_kv, attention, o, mlp_norm, ...
    float ms;             // from the previous event (the spin's end for the first operation)
    size_t weight_bytes;  // weight bytes the operation streams (0 for the small kernels)
  };
  std::vector<OpTime> profile_step(int32_t token);
  // Drops the captured graph (after a kernel tuning knob changed); the next graph step captures
  // the step again.
  void discard_graph();

  // Whether the RMSNorms (with their residual adds) and SiLU·mul run inside the next linear's
  // input staging where that linear takes it (quantized, BulkGemv path: wxa16_linear.h's
  // WxA16Input); on by default. Changing it needs discard_graph().
  bool fuse_small_ops = true;

 private:
  void run_step();
  void linear(const CudaLinear& w, const void* x, void* y, const char* op);
  // The weight the BulkGemv path would stream (quantized, or the fp8 copy); null when none.
  const WxA16Weight* bulk_weight(const CudaLinear& w) const;
  bool fusable(const CudaLinear& w) const;
  // residual (+ delta) → RMSNorm → linear, fused when the linear takes it; `residual` becomes
  // the buffer that holds the updated residual.
  void norm_linear(void*& residual, const void* delta, const DeviceBuffer& norm_weight,
                   const CudaLinear& w, void* y, const char* norm_op, const char* op,
                   const char* fused_op);
  void mark(const char* op, size_t weight_bytes = 0);

  CudaLlamaConfig config_;
  int64_t max_tokens_ = 0;
  int64_t position_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaGraphExec_t graph_ = nullptr;
  bool warmed_up_ = false;
  bool profiling_ = false;
  std::vector<cudaEvent_t> op_events_;
  std::vector<OpTime> op_times_;
  LtGemm lt_;
  WxA16Workspace wxa16_workspace_;
  Fp8Workspace fp8_workspace_;
  Int8Workspace int8_workspace_;
  PagedAttentionWorkspace attention_workspace_;
  std::vector<DeviceBuffer> k_cache_, v_cache_;
  DeviceBuffer block_table_, seq_len_, position_dev_, token_, history_, inv_freq_, argmax_scratch_;
  // hidden_ and hidden_alt_ take turns holding the residual stream: a fused norm reads one and
  // writes the other (every CTA of the kernel still reads the old values).
  DeviceBuffer hidden_, hidden_alt_, normed_, qkv_, attn_out_, proj_out_, gate_up_, act_, logits_;
};

}  // namespace nibble::cuda
