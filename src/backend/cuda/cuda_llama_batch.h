#pragma once
// Many tokens of many sequences through a CudaLlama's weights in one forward pass: the prefill
// of whole prompts and the batched decode step of concurrent requests. A forward takes rows
// (sequence, token, position); each linear runs once over all rows (wxa16_linear picks its path
// by the row count: the decode GEMVs for a few rows, the streaming tensor-core kernel up to 128,
// dequantize + cuBLASLt beyond), RoPE writes every row's key and value into its sequence's part
// of the paged KV cache, and attention gives each row its own causal view: row r attends to
// positions [0, position[r]] of its sequence. Rows of a prompt therefore attend to each other
// within one forward (a prompt's rows all write the cache before any attends).
//
// Attention runs on tensor cores over tiles of up to 16 consecutive rows of one sequence
// (paged_attention_rows.h): a prompt's keys are read once per tile and KV head, a decode row's
// once per KV head. A forward's kernels are captured into a CUDA graph per shape (rows, tiles,
// sampled rows) the second time that shape runs in a row and replayed after (a decode step of
// a steady batch launches one graph instead of ~330 kernels); an eager forward of any other
// shape drops the graphs, since it may grow a workspace they point into. The picks go back to
// the host each forward.
//
// The KV cache is bf16, max_seqs slots of max_tokens positions each (sequence s owns its own
// run of blocks); a sequence slot is reused by writing position 0 again.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_llama.h"

namespace nibble::cuda {

struct CudaLlamaBatchLimits {
  int64_t max_seqs = 1;     // sequence slots in the KV cache
  int64_t max_tokens = 16;  // positions per sequence (rounded up to a multiple of 16)
  int64_t max_rows = 1;     // rows per forward
  int64_t max_sampled = 1;  // rows per forward whose logits and pick are wanted
};

struct CudaBatchRow {
  int32_t seq = 0;       // KV slot, < max_seqs
  int32_t token = 0;     // < vocab
  int32_t position = 0;  // < max_tokens; positions before it must already be in the cache
  bool sample = false;   // compute this row's logits and greedy pick
};

class CudaLlamaBatch {
 public:
  // Borrows `model`'s weights (finish_loading() done; it must outlive this object); owns its own
  // KV cache, activations, workspaces and stream.
  CudaLlamaBatch(const CudaLlama& model, CudaLlamaBatchLimits limits);
  ~CudaLlamaBatch();
  CudaLlamaBatch(const CudaLlamaBatch&) = delete;
  CudaLlamaBatch& operator=(const CudaLlamaBatch&) = delete;

  // Runs the rows; returns the greedy pick (first index of the maximum) of each sampled row, in
  // row order. Synchronizes. Errors name the offending row.
  std::vector<int32_t> forward(const std::vector<CudaBatchRow>& rows);
  // The last forward's logits of its sampled rows (bf16 → f32), [sampled][vocab].
  std::vector<float> sampled_logits() const;
  const CudaLlamaBatchLimits& limits() const { return limits_; }
  cudaStream_t stream() const { return stream_; }
  // CUDA graphs on (the default) or off (every forward launches its kernels; drops the graphs).
  void set_cuda_graphs(bool on);
  // Bytes of KV cache (all layers, K and V).
  size_t kv_cache_bytes() const;

 private:
  using GraphKey = std::tuple<int64_t, int64_t, int64_t>;  // rows, tiles, sampled rows
  void linear(const CudaLinear& w, const void* x, int64_t m, void* y);
  // Everything after the rows' upload: layers, then the sampled rows' logits and picks.
  void run_device(int64_t m, int64_t n_tiles, int64_t sampled);
  void discard_graphs();

  const CudaLlama& model_;
  CudaLlamaBatchLimits limits_;
  int64_t blocks_per_seq_ = 0;
  int64_t last_sampled_ = 0;
  cudaStream_t stream_ = nullptr;
  bool use_graphs_ = true;
  std::set<GraphKey> warmed_up_;  // shapes run eagerly since the graphs were last dropped
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  LtGemm lt_;
  WxA16Workspace wxa16_workspace_;
  Fp8Workspace fp8_workspace_;
  Int8Workspace int8_workspace_;
  std::vector<DeviceBuffer> k_cache_, v_cache_;
  std::vector<int32_t> host_rows_;  // [seq | token | position | sampled index] staging
  DeviceBuffer rows_, block_tables_, seq_lens_, picks_, inv_freq_;
  DeviceBuffer hidden_, normed_, qkv_, attn_out_, proj_out_, gate_up_, act_, logits_;
  DeviceBuffer sampled_hidden_;  // the sampled rows' residual, then their last MLP outputs
};

}  // namespace nibble::cuda
