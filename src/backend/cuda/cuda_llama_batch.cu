#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_llama_batch.h"
#include "backend/cuda/llama_kernels.h"
#include "backend/cuda/paged_attention_rows.h"

namespace nibble::cuda {

CudaLlamaBatch::CudaLlamaBatch(const CudaLlama& model, CudaLlamaBatchLimits limits)
    : model_(model), limits_(limits) {
  const CudaLlamaConfig& c = model.config();
  NIBBLE_CHECK(limits.max_seqs > 0 && limits.max_tokens > 0 && limits.max_rows > 0 &&
                   limits.max_rows <= 65535 && limits.max_sampled > 0 &&
                   limits.max_sampled <= limits.max_rows,
               "CudaLlamaBatch: {} sequences of {} tokens, {} rows ({} sampled) per forward",
               limits.max_seqs, limits.max_tokens, limits.max_rows, limits.max_sampled);
  NIBBLE_CHECK(!model.layers.empty() && model.embedding.bytes() > 0,
               "CudaLlamaBatch: the model's weights are not loaded");
  limits_.max_tokens = (limits.max_tokens + 15) / 16 * 16;
  blocks_per_seq_ = limits_.max_tokens / 16;
  NIBBLE_CHECK(limits_.max_seqs * blocks_per_seq_ < (int64_t(1) << 31),
               "CudaLlamaBatch: {} KV blocks", limits_.max_seqs * blocks_per_seq_);
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));

  const size_t block_bytes = size_t(c.n_kv_heads * 16 * c.head_dim * 2);
  const size_t cache_bytes = block_bytes * size_t(limits_.max_seqs * blocks_per_seq_);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    k_cache_.emplace_back(cache_bytes);
    v_cache_.emplace_back(cache_bytes);
  }
  const size_t rows = size_t(limits_.max_rows), sampled = size_t(limits_.max_sampled);
  const int64_t qkv_cols = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
  // [seq | token | position | sampled index] then the attention's row tiles (at most one a row)
  rows_.resize(4 * rows * sizeof(int32_t) + rows * sizeof(RowTile));
  block_tables_.resize(rows * size_t(blocks_per_seq_) * sizeof(int32_t));
  seq_lens_.resize(rows * sizeof(int32_t));
  picks_.resize(sampled * sizeof(int32_t));
  inv_freq_.resize(c.inv_freq.size() * sizeof(float));
  inv_freq_.upload(c.inv_freq.data(), inv_freq_.bytes());
  hidden_.resize(rows * size_t(c.hidden) * 2);
  normed_.resize(rows * size_t(c.hidden) * 2);
  qkv_.resize(rows * size_t(qkv_cols) * 2);
  attn_out_.resize(rows * size_t(c.n_heads * c.head_dim) * 2);
  proj_out_.resize(rows * size_t(c.hidden) * 2);
  gate_up_.resize(rows * size_t(2 * c.intermediate) * 2);
  act_.resize(rows * size_t(c.intermediate) * 2);
  sampled_hidden_.resize(2 * sampled * size_t(c.hidden) * 2);  // residual rows, then deltas
  logits_.resize(sampled * size_t(c.vocab) * 2);
}

CudaLlamaBatch::~CudaLlamaBatch() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void CudaLlamaBatch::discard_graphs() {
  for (auto& [key, exec] : graphs_) NIBBLE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  graphs_.clear();
  warmed_up_.clear();
}

void CudaLlamaBatch::set_cuda_graphs(bool on) {
  use_graphs_ = on;
  if (!on) discard_graphs();
}

size_t CudaLlamaBatch::kv_cache_bytes() const {
  size_t bytes = 0;
  for (size_t l = 0; l < k_cache_.size(); ++l) bytes += k_cache_[l].bytes() + v_cache_[l].bytes();
  return bytes;
}

void CudaLlamaBatch::linear(const CudaLinear& w, const void* x, int64_t m, void* y) {
  if (w.quantized) {
    wxa16_linear(lt_, *w.quantized, x, m, y, wxa16_workspace_, stream_);
  } else if (w.fp8_gemv && wxa16_gemv_tuning().bulk && wxa16_bulk_gemv_supports(*w.fp8_gemv, m)) {
    wxa16_bulk_gemv(*w.fp8_gemv, x, m, y, stream_);
  } else if (w.fp8) {
    fp8_linear(lt_, *w.fp8, x, m, y, fp8_workspace_, Fp8Options{}, stream_);
  } else if (w.int8) {
    int8_linear(lt_, *w.int8, x, m, y, int8_workspace_, stream_);
  } else {
    NIBBLE_CHECK(w.dense.bytes() > 0,
                 "CudaLlamaBatch: a linear of [{}, {}] has no weight for {} "
                 "rows (an fp8 weight held only in the decode GEMV's layout)",
                 w.rows, w.cols, m);
    dense_gemm_bf16(lt_, x, w.dense.get(), y, m, w.rows, w.cols, stream_);
  }
}

void CudaLlamaBatch::run_device(int64_t m, int64_t n_tiles, int64_t sampled) {
  const CudaLlamaConfig& c = model_.config();
  const int32_t* seq = rows_.get<int32_t>();
  const int32_t* tokens = seq + m;
  const int32_t* positions = seq + 2 * m;
  const int32_t* sampled_rows = seq + 3 * m;
  const auto* device_tiles = reinterpret_cast<const RowTile*>(seq + 4 * m);
  row_block_tables(seq, m, int(blocks_per_seq_), block_tables_.get<int32_t>(), stream_);

  const int64_t qkv_cols = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
  embedding_lookup(model_.embedding.get(), tokens, c.hidden, hidden_.get(), stream_, m);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CudaLlamaLayer& layer = model_.layers[size_t(l)];
    // The previous layer's MLP output joins the residual inside the norm (none before layer 0).
    rms_norm(hidden_.get(), l == 0 ? nullptr : proj_out_.get(), layer.attn_norm.get(),
             normed_.get(), c.hidden, c.rms_eps, stream_, m);
    linear(layer.qkv, normed_.get(), m, qkv_.get());
    RopeCacheArgs rope;
    rope.qkv = qkv_.get();
    rope.inv_freq = inv_freq_.get<float>();
    rope.position = positions;
    rope.n_heads = int(c.n_heads);
    rope.n_kv_heads = int(c.n_kv_heads);
    rope.head_dim = int(c.head_dim);
    rope.k_cache = k_cache_[size_t(l)].get();
    rope.v_cache = v_cache_[size_t(l)].get();
    rope.seq_len = seq_lens_.get<int32_t>();
    rope.rows = int(m);
    rope.block_tables = block_tables_.get<int32_t>();
    rope.max_blocks_per_row = int(blocks_per_seq_);
    rope_and_cache(rope, stream_);
    PagedRowsAttentionArgs attn;
    attn.q = qkv_.get();
    attn.q_stride = qkv_cols;
    attn.k_cache = k_cache_[size_t(l)].get();
    attn.v_cache = v_cache_[size_t(l)].get();
    attn.block_tables = block_tables_.get<int32_t>();
    attn.max_blocks_per_row = int(blocks_per_seq_);
    attn.tiles = device_tiles;
    attn.n_tiles = int(n_tiles);
    attn.out = attn_out_.get();
    attn.n_heads = int(c.n_heads);
    attn.n_kv_heads = int(c.n_kv_heads);
    attn.head_dim = int(c.head_dim);
    attn.scale = 1.0f / std::sqrt(float(c.head_dim));
    paged_attention_rows(attn, stream_);
    linear(layer.o, attn_out_.get(), m, proj_out_.get());
    rms_norm(hidden_.get(), proj_out_.get(), layer.mlp_norm.get(), normed_.get(), c.hidden,
             c.rms_eps, stream_, m);
    linear(layer.gate_up, normed_.get(), m, gate_up_.get());
    silu_mul(gate_up_.get(), act_.get(), c.intermediate, stream_, m);
    linear(layer.down, act_.get(), m, proj_out_.get());
  }
  if (sampled == 0) return;
  // Only the sampled rows go through the final norm and lm_head (a prompt wants one).
  auto* residual = sampled_hidden_.get<__nv_bfloat16>();
  auto* delta = residual + sampled * c.hidden;
  gather_rows(hidden_.get(), sampled_rows, sampled, c.hidden, residual, stream_);
  gather_rows(proj_out_.get(), sampled_rows, sampled, c.hidden, delta, stream_);
  rms_norm(residual, delta, model_.final_norm.get(), normed_.get(), c.hidden, c.rms_eps, stream_,
           sampled);
  linear(model_.lm_head, normed_.get(), sampled, logits_.get());
  argmax_rows(logits_.get(), sampled, c.vocab, picks_.get<int32_t>(), stream_);
}

std::vector<int32_t> CudaLlamaBatch::forward(const std::vector<CudaBatchRow>& rows) {
  const CudaLlamaConfig& c = model_.config();
  const int64_t m = int64_t(rows.size());
  NIBBLE_CHECK(m > 0 && m <= limits_.max_rows, "CudaLlamaBatch: {} rows (1 .. {})", m,
               limits_.max_rows);
  // [seq | token | position | index of each sampled row]
  host_rows_.assign(size_t(4 * m), 0);
  int64_t sampled = 0;
  for (int64_t r = 0; r < m; ++r) {
    const CudaBatchRow& row = rows[size_t(r)];
    NIBBLE_CHECK(row.seq >= 0 && row.seq < limits_.max_seqs,
                 "CudaLlamaBatch: row {}: sequence {} (slots 0 .. {})", r, row.seq,
                 limits_.max_seqs - 1);
    NIBBLE_CHECK(row.token >= 0 && row.token < c.vocab,
                 "CudaLlamaBatch: row {}: token {} is outside the vocabulary of {}", r, row.token,
                 c.vocab);
    NIBBLE_CHECK(row.position >= 0 && row.position < limits_.max_tokens,
                 "CudaLlamaBatch: row {}: position {} is past the KV cache's {} tokens", r,
                 row.position, limits_.max_tokens);
    host_rows_[size_t(r)] = row.seq;
    host_rows_[size_t(m + r)] = row.token;
    host_rows_[size_t(2 * m + r)] = row.position;
    if (row.sample) {
      NIBBLE_CHECK(sampled < limits_.max_sampled, "CudaLlamaBatch: more than {} sampled rows",
                   limits_.max_sampled);
      host_rows_[size_t(3 * m + sampled++)] = int32_t(r);
    }
  }
  // Attention's tiles: runs of up to 16 consecutive positions of one sequence, staged after
  // the rows so that one copy carries both.
  const std::vector<RowTile> tiles =
      make_row_tiles(std::vector<int32_t>(host_rows_.begin(), host_rows_.begin() + m),
                     std::vector<int32_t>(host_rows_.begin() + 2 * m, host_rows_.begin() + 3 * m));
  const size_t tile_words = tiles.size() * sizeof(RowTile) / sizeof(int32_t);
  host_rows_.resize(size_t(4 * m) + tile_words);
  std::memcpy(host_rows_.data() + 4 * m, tiles.data(), tiles.size() * sizeof(RowTile));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(rows_.get(), host_rows_.data(),
                                    host_rows_.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    stream_));
  last_sampled_ = sampled;
  const GraphKey key{m, int64_t(tiles.size()), sampled};
  if (!use_graphs_ || warmed_up_.count(key) == 0) {
    // An eager forward may grow a workspace, which would leave captured graphs pointing at
    // freed memory: it drops them, and its shape is warm (sized) for a capture next time.
    discard_graphs();
    warmed_up_.insert(key);
    run_device(m, int64_t(tiles.size()), sampled);
  } else {
    auto graph = graphs_.find(key);
    if (graph == graphs_.end()) {
      cudaGraph_t captured = nullptr;
      NIBBLE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        run_device(m, int64_t(tiles.size()), sampled);
      } catch (...) {
        cudaStreamEndCapture(stream_, &captured);
        if (captured != nullptr) cudaGraphDestroy(captured);
        throw;
      }
      NIBBLE_CUDA_CHECK(cudaStreamEndCapture(stream_, &captured));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t status = cudaGraphInstantiate(&exec, captured, 0);
      cudaGraphDestroy(captured);
      NIBBLE_CUDA_CHECK(status);
      graph = graphs_.emplace(key, exec).first;
    }
    NIBBLE_CUDA_CHECK(cudaGraphLaunch(graph->second, stream_));
  }
  if (sampled == 0) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return {};
  }
  std::vector<int32_t> picks(size_t(sampled), 0);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(picks.data(), picks_.get(), picks.size() * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return picks;
}

std::vector<float> CudaLlamaBatch::sampled_logits() const {
  const size_t n = size_t(last_sampled_) * size_t(model_.config().vocab);
  std::vector<__nv_bfloat16> raw(n);
  if (n > 0) {
    NIBBLE_CUDA_CHECK(
        cudaMemcpyAsync(raw.data(), logits_.get(), n * 2, cudaMemcpyDeviceToHost, stream_));
  }
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

}  // namespace nibble::cuda
