#include <cuda_bf16.h>

#include <cmath>
#include <numeric>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_llama.h"
#include "backend/cuda/llama_kernels.h"

namespace nibble::cuda {
namespace {

void check_linear(const CudaLinear& w, int64_t rows, int64_t cols, const char* what,
                  int64_t layer) {
  NIBBLE_CHECK(w.rows == rows && w.cols == cols,
               "layer {} {}: weight is [{}, {}], expected [{}, {}]", layer, what, w.rows, w.cols,
               rows, cols);
  if (w.quantized) {
    NIBBLE_CHECK(w.quantized->rows == rows && w.quantized->cols == cols,
                 "layer {} {}: quantized weight is [{}, {}], expected [{}, {}]", layer, what,
                 w.quantized->rows, w.quantized->cols, rows, cols);
  } else if (w.fp8) {
    NIBBLE_CHECK(w.fp8->rows == rows && w.fp8->cols == cols,
                 "layer {} {}: fp8 weight is [{}, {}], expected [{}, {}]", layer, what, w.fp8->rows,
                 w.fp8->cols, rows, cols);
  } else if (w.int8) {
    NIBBLE_CHECK(w.int8->rows == rows && w.int8->cols == cols,
                 "layer {} {}: int8 weight is [{}, {}], expected [{}, {}]", layer, what,
                 w.int8->rows, w.int8->cols, rows, cols);
  } else {
    NIBBLE_CHECK(w.dense.bytes() == size_t(rows * cols * 2),
                 "layer {} {}: dense weight has {} bytes, expected bf16 [{}, {}]", layer, what,
                 w.dense.bytes(), rows, cols);
  }
}

void check_vector(const DeviceBuffer& b, int64_t n, const char* what, int64_t layer) {
  NIBBLE_CHECK(b.bytes() == size_t(n * 2), "layer {} {}: {} bytes, expected bf16 [{}]", layer, what,
               b.bytes(), n);
}

}  // namespace

CudaLlama::CudaLlama(CudaLlamaConfig config, int64_t max_tokens)
    : config_(std::move(config)), max_tokens_((max_tokens + 15) / 16 * 16) {
  const CudaLlamaConfig& c = config_;
  NIBBLE_CHECK(c.hidden > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
                   c.head_dim > 0 && c.intermediate > 0 && c.vocab > 0,
               "CudaLlama: hidden {}, layers {}, heads {}, KV heads {}, head_dim {}, "
               "intermediate {}, vocab {} must be positive",
               c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.intermediate, c.vocab);
  NIBBLE_CHECK(int64_t(c.inv_freq.size()) * 2 == c.head_dim,
               "CudaLlama: {} RoPE frequencies for head_dim {}", c.inv_freq.size(), c.head_dim);
  NIBBLE_CHECK(max_tokens > 0, "CudaLlama: KV cache capacity {} tokens", max_tokens);
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  layers.resize(size_t(c.n_layers));
}

CudaLlama::~CudaLlama() {
  for (cudaEvent_t e : op_events_) cudaEventDestroy(e);
  if (graph_ != nullptr) cudaGraphExecDestroy(graph_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void CudaLlama::finish_loading() {
  const CudaLlamaConfig& c = config_;
  const int64_t q_rows = c.n_heads * c.head_dim, kv_rows = c.n_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CudaLlamaLayer& layer = layers[size_t(l)];
    check_vector(layer.attn_norm, c.hidden, "input_layernorm", l);
    check_vector(layer.mlp_norm, c.hidden, "post_attention_layernorm", l);
    check_linear(layer.qkv, q_rows + 2 * kv_rows, c.hidden, "q/k/v_proj", l);
    check_linear(layer.o, c.hidden, q_rows, "o_proj", l);
    check_linear(layer.gate_up, 2 * c.intermediate, c.hidden, "gate/up_proj", l);
    check_linear(layer.down, c.hidden, c.intermediate, "down_proj", l);
  }
  NIBBLE_CHECK(embedding.bytes() == size_t(c.vocab * c.hidden * 2),
               "embed_tokens: {} bytes, expected bf16 [{}, {}]", embedding.bytes(), c.vocab,
               c.hidden);
  check_vector(final_norm, c.hidden, "final norm", c.n_layers);
  check_linear(lm_head, c.vocab, c.hidden, "lm_head", c.n_layers);

  const size_t block_bytes = size_t(c.n_kv_heads * 16 * c.head_dim * 2);
  const int64_t blocks = max_tokens_ / 16;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    k_cache_.emplace_back(block_bytes * size_t(blocks));
    v_cache_.emplace_back(block_bytes * size_t(blocks));
  }
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  std::iota(table.begin(), table.end(), 0);
  block_table_.resize(table.size() * sizeof(int32_t));
  block_table_.upload(table.data(), block_table_.bytes());
  seq_len_.resize(sizeof(int32_t));
  position_dev_.resize(sizeof(int32_t));
  token_.resize(sizeof(int32_t));
  history_.resize(size_t(max_tokens_) * sizeof(int32_t));
  inv_freq_.resize(c.inv_freq.size() * sizeof(float));
  inv_freq_.upload(c.inv_freq.data(), inv_freq_.bytes());
  hidden_.resize(size_t(c.hidden * 2));
  hidden_alt_.resize(size_t(c.hidden * 2));
  normed_.resize(size_t(c.hidden * 2));
  qkv_.resize(size_t((q_rows + 2 * kv_rows) * 2));
  attn_out_.resize(size_t(q_rows * 2));
  proj_out_.resize(size_t(c.hidden * 2));
  gate_up_.resize(size_t(2 * c.intermediate * 2));
  act_.resize(size_t(c.intermediate * 2));
  logits_.resize(size_t(c.vocab * 2));
  reset();
}

size_t CudaLlama::step_weight_bytes() const {
  size_t bytes = lm_head.weight_bytes() + final_norm.bytes() + size_t(config_.hidden * 2);
  for (const CudaLlamaLayer& l : layers) {
    bytes += l.attn_norm.bytes() + l.mlp_norm.bytes() + l.qkv.weight_bytes() + l.o.weight_bytes() +
             l.gate_up.weight_bytes() + l.down.weight_bytes();
  }
  return bytes;
}

void CudaLlama::reset() {
  position_ = 0;
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(position_dev_.get(), 0, sizeof(int32_t), stream_));
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(token_.get(), 0, sizeof(int32_t), stream_));
}

void CudaLlama::linear(const CudaLinear& w, const void* x, void* y, const char* op) {
  if (w.quantized) {
    wxa16_linear(lt_, *w.quantized, x, 1, y, wxa16_workspace_, stream_);
  } else if (const WxA16Weight* fp8 = bulk_weight(w);
             fp8 != nullptr && wxa16_gemv_tuning().bulk && wxa16_bulk_gemv_supports(*fp8, 1)) {
    wxa16_bulk_gemv(*fp8, x, 1, y, stream_);
  } else if (w.fp8) {
    fp8_linear(lt_, *w.fp8, x, 1, y, fp8_workspace_, Fp8Options{}, stream_);
  } else if (w.int8) {
    int8_linear(lt_, *w.int8, x, 1, y, int8_workspace_, stream_);
  } else {
    dense_gemm_bf16(lt_, x, w.dense.get(), y, 1, w.rows, w.cols, stream_);
  }
  mark(op, w.weight_bytes());
}

const WxA16Weight* CudaLlama::bulk_weight(const CudaLinear& w) const {
  return w.quantized ? w.quantized.get() : w.fp8_gemv.get();
}

bool CudaLlama::fusable(const CudaLinear& w) const {
  const WxA16Weight* bulk = bulk_weight(w);
  return fuse_small_ops && bulk != nullptr && wxa16_gemv_tuning().bulk &&
         wxa16_bulk_gemv_fuses(*bulk, 1);
}

void CudaLlama::norm_linear(void*& residual, const void* delta, const DeviceBuffer& norm_weight,
                            const CudaLinear& w, void* y, const char* norm_op, const char* op,
                            const char* fused_op) {
  if (!fusable(w)) {
    rms_norm(residual, delta, norm_weight.get(), normed_.get(), config_.hidden, config_.rms_eps,
             stream_);
    mark(norm_op, norm_weight.bytes());
    linear(w, normed_.get(), y, op);
    return;
  }
  void* other = residual == hidden_.get() ? hidden_alt_.get() : hidden_.get();
  WxA16Input input;
  input.kind = WxA16Input::Kind::ResidualRmsNorm;
  input.x = residual;
  input.delta = delta;
  input.norm_weight = norm_weight.get();
  input.residual_out = delta != nullptr ? other : nullptr;
  input.eps = config_.rms_eps;
  wxa16_bulk_gemv(*bulk_weight(w), input, 1, y, stream_);
  if (delta != nullptr) residual = other;
  mark(fused_op, w.weight_bytes() + norm_weight.bytes());
}

void CudaLlama::mark(const char* op, size_t weight_bytes) {
  if (!profiling_) return;
  const size_t i = op_times_.size();
  if (i == op_events_.size()) {
    cudaEvent_t e = nullptr;
    NIBBLE_CUDA_CHECK(cudaEventCreate(&e));
    op_events_.push_back(e);
  }
  NIBBLE_CUDA_CHECK(cudaEventRecord(op_events_[i], stream_));
  op_times_.push_back({op, 0.0f, weight_bytes});
}

void CudaLlama::discard_graph() {
  if (graph_ != nullptr) NIBBLE_CUDA_CHECK(cudaGraphExecDestroy(graph_));
  graph_ = nullptr;
  // A changed knob may need larger workspaces: the next graph step runs eagerly first, since
  // nothing may be allocated while a stream is being captured.
  warmed_up_ = false;
}

std::vector<CudaLlama::OpTime> CudaLlama::profile_step(int32_t token) {
  NIBBLE_CHECK(position_ < max_tokens_, "CudaLlama: position {} is past the KV cache's {} tokens",
               position_, max_tokens_);
  NIBBLE_CHECK(token < config_.vocab, "CudaLlama: token {} is outside the vocabulary of {}", token,
               config_.vocab);
  if (token >= 0) set_token(token_.get<int32_t>(), token, stream_);
  // ~330 launches and as many event records take the host a few ms: the GPU waits that long.
  gpu_spin(20'000'000, stream_);
  profiling_ = true;
  op_times_.clear();
  try {
    mark("start");
    run_step();
  } catch (...) {
    profiling_ = false;
    throw;
  }
  profiling_ = false;
  warmed_up_ = true;
  ++position_;
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<OpTime> out;
  for (size_t i = 1; i < op_times_.size(); ++i) {
    OpTime t = op_times_[i];
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&t.ms, op_events_[i - 1], op_events_[i]));
    out.push_back(t);
  }
  return out;
}

void CudaLlama::run_step() {
  const CudaLlamaConfig& c = config_;
  embedding_lookup(embedding.get(), token_.get<int32_t>(), c.hidden, hidden_.get(), stream_);
  mark("embedding", size_t(c.hidden * 2));
  void* residual = hidden_.get();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CudaLlamaLayer& layer = layers[size_t(l)];
    // The previous layer's MLP output joins the residual inside the norm (none before layer 0).
    norm_linear(residual, l == 0 ? nullptr : proj_out_.get(), layer.attn_norm, layer.qkv,
                qkv_.get(), "attn_norm", "qkv", "attn_norm+qkv");
    RopeCacheArgs rope;
    rope.qkv = qkv_.get();
    rope.inv_freq = inv_freq_.get<float>();
    rope.position = position_dev_.get<int32_t>();
    rope.n_heads = int(c.n_heads);
    rope.n_kv_heads = int(c.n_kv_heads);
    rope.head_dim = int(c.head_dim);
    rope.k_cache = k_cache_[size_t(l)].get();
    rope.v_cache = v_cache_[size_t(l)].get();
    rope.seq_len = seq_len_.get<int32_t>();
    rope_and_cache(rope, stream_);
    mark("rope_kv");
    PagedAttentionArgs attn;
    attn.q = qkv_.get();
    attn.k_cache = k_cache_[size_t(l)].get();
    attn.v_cache = v_cache_[size_t(l)].get();
    attn.block_tables = block_table_.get<int32_t>();
    attn.seq_lens = seq_len_.get<int32_t>();
    attn.out = attn_out_.get();
    attn.num_seqs = 1;
    attn.n_heads = int(c.n_heads);
    attn.n_kv_heads = int(c.n_kv_heads);
    attn.head_dim = int(c.head_dim);
    attn.max_blocks_per_seq = int(max_tokens_ / 16);
    // The capacity, not the current length: the grid must not change between graph replays
    // (partitions past the sequence's end return at once).
    attn.max_seq_len = int(max_tokens_);
    attn.scale = 1.0f / std::sqrt(float(c.head_dim));
    paged_attention_decode(attn, attention_workspace_, stream_);
    mark("attention");
    linear(layer.o, attn_out_.get(), proj_out_.get(), "o");
    norm_linear(residual, proj_out_.get(), layer.mlp_norm, layer.gate_up, gate_up_.get(),
                "mlp_norm", "gate_up", "mlp_norm+gate_up");
    if (fusable(layer.down)) {
      WxA16Input input;
      input.kind = WxA16Input::Kind::SiluMul;
      input.x = gate_up_.get();
      wxa16_bulk_gemv(*bulk_weight(layer.down), input, 1, proj_out_.get(), stream_);
      mark("silu_mul+down", layer.down.weight_bytes());
    } else {
      silu_mul(gate_up_.get(), act_.get(), c.intermediate, stream_);
      mark("silu_mul");
      linear(layer.down, act_.get(), proj_out_.get(), "down");
    }
  }
  norm_linear(residual, proj_out_.get(), final_norm, lm_head, logits_.get(), "final_norm",
              "lm_head", "final_norm+lm_head");
  argmax_and_advance(logits_.get(), c.vocab, token_.get<int32_t>(), history_.get<int32_t>(),
                     position_dev_.get<int32_t>(), argmax_scratch_, stream_);
  mark("argmax");
}

void CudaLlama::step(int32_t token, bool use_graph) {
  NIBBLE_CHECK(position_ < max_tokens_, "CudaLlama: position {} is past the KV cache's {} tokens",
               position_, max_tokens_);
  NIBBLE_CHECK(token < config_.vocab, "CudaLlama: token {} is outside the vocabulary of {}", token,
               config_.vocab);
  if (token >= 0) set_token(token_.get<int32_t>(), token, stream_);
  if (!use_graph || !warmed_up_) {
    run_step();
    warmed_up_ = true;
  } else {
    if (graph_ == nullptr) {
      cudaGraph_t graph = nullptr;
      NIBBLE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        run_step();
      } catch (...) {
        cudaStreamEndCapture(stream_, &graph);
        if (graph != nullptr) cudaGraphDestroy(graph);
        throw;
      }
      NIBBLE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
      const cudaError_t status = cudaGraphInstantiate(&graph_, graph, 0);
      cudaGraphDestroy(graph);
      NIBBLE_CUDA_CHECK(status);
    }
    NIBBLE_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
  }
  ++position_;
}

std::vector<float> CudaLlama::logits() const {
  std::vector<__nv_bfloat16> raw(static_cast<size_t>(config_.vocab));
  NIBBLE_CUDA_CHECK(
      cudaMemcpyAsync(raw.data(), logits_.get(), raw.size() * 2, cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = __bfloat162float(raw[i]);
  return out;
}

int32_t CudaLlama::last_token() const {
  int32_t token = 0;
  NIBBLE_CUDA_CHECK(
      cudaMemcpyAsync(&token, token_.get(), sizeof(token), cudaMemcpyDeviceToHost, stream_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return token;
}

std::vector<int32_t> CudaLlama::history() const {
  std::vector<int32_t> out(static_cast<size_t>(position_));
  if (!out.empty()) {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(out.data(), history_.get(), out.size() * sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
  }
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

}  // namespace nibble::cuda
