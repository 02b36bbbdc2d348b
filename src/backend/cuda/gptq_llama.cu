#include <algorithm>
#include <chrono>
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gptq_llama.h"
#include "backend/cuda/llama_kernels.h"
#include "backend/cuda/paged_attention_rows.h"

namespace nibble::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The activations of one chunk of calibration sequences and the KV cache of one layer for them
// (sequence s of the chunk owns its own run of 16-token blocks).
class CalibrationForward {
 public:
  CalibrationForward(const CudaLlama& model, const GptqCalibration& cal, cudaStream_t stream)
      : c_(model.config()), stream_(stream) {
    rows_ = cal.samples_per_chunk * cal.seqlen;
    blocks_per_seq_ = int((cal.seqlen + 15) / 16);
    qkv_cols_ = (c_.n_heads + 2 * c_.n_kv_heads) * c_.head_dim;
    std::vector<int32_t> seq(static_cast<size_t>(rows_)), position(static_cast<size_t>(rows_));
    for (int64_t r = 0; r < rows_; ++r) {
      seq[size_t(r)] = int32_t(r / cal.seqlen);
      position[size_t(r)] = int32_t(r % cal.seqlen);
    }
    const std::vector<RowTile> tiles = make_row_tiles(seq, position);
    n_tiles_ = int64_t(tiles.size());
    seq_.resize(size_t(rows_) * 4);
    seq_.upload(seq.data(), seq_.bytes());
    position_.resize(size_t(rows_) * 4);
    position_.upload(position.data(), position_.bytes());
    tiles_.resize(tiles.size() * sizeof(RowTile));
    tiles_.upload(tiles.data(), tiles_.bytes());
    seq_len_.resize(size_t(rows_) * 4);
    block_tables_.resize(size_t(rows_) * size_t(blocks_per_seq_) * 4);
    row_block_tables(seq_.get<int32_t>(), rows_, blocks_per_seq_, block_tables_.get<int32_t>(),
                     stream_);
    inv_freq_.resize(c_.inv_freq.size() * sizeof(float));
    inv_freq_.upload(c_.inv_freq.data(), inv_freq_.bytes());
    const size_t cache = size_t(cal.samples_per_chunk * blocks_per_seq_) * 16 *
                         size_t(c_.n_kv_heads * c_.head_dim) * 2;
    k_cache_.resize(cache);
    v_cache_.resize(cache);
    normed_.resize(size_t(rows_ * c_.hidden) * 2);
    qkv_.resize(size_t(rows_ * qkv_cols_) * 2);
    proj_.resize(size_t(rows_ * c_.hidden) * 2);
    gate_up_.resize(size_t(rows_ * 2 * c_.intermediate) * 2);
    act_.resize(size_t(rows_ * c_.intermediate) * 2);
  }

  int64_t rows() const { return rows_; }
  const void* normed() const { return normed_.get(); }
  const void* act() const { return act_.get(); }

  // normed = rms_norm(x (+ delta, added into x)) with `norm`.
  void norm(void* x, const void* delta, const DeviceBuffer& norm) {
    rms_norm(x, delta, norm.get(), normed_.get(), c_.hidden, c_.rms_eps, stream_, rows_);
  }
  // Attention of the chunk's sequences with the layer's current q/k/v weight, from normed().
  void attention(const CudaLlamaLayer& layer, void* out) {
    dense_gemm_bf16(lt_, normed_.get(), layer.qkv.dense.get(), qkv_.get(), rows_, layer.qkv.rows,
                    layer.qkv.cols, stream_);
    RopeCacheArgs rope;
    rope.qkv = qkv_.get();
    rope.inv_freq = inv_freq_.get<float>();
    rope.position = position_.get<int32_t>();
    rope.n_heads = int(c_.n_heads);
    rope.n_kv_heads = int(c_.n_kv_heads);
    rope.head_dim = int(c_.head_dim);
    rope.k_cache = k_cache_.get();
    rope.v_cache = v_cache_.get();
    rope.seq_len = seq_len_.get<int32_t>();
    rope.rows = int(rows_);
    rope.block_tables = block_tables_.get<int32_t>();
    rope.max_blocks_per_row = blocks_per_seq_;
    rope_and_cache(rope, stream_);
    PagedRowsAttentionArgs attn;
    attn.q = qkv_.get();
    attn.q_stride = qkv_cols_;
    attn.k_cache = k_cache_.get();
    attn.v_cache = v_cache_.get();
    attn.block_tables = block_tables_.get<int32_t>();
    attn.max_blocks_per_row = blocks_per_seq_;
    attn.tiles = tiles_.get<RowTile>();
    attn.n_tiles = int(n_tiles_);
    attn.out = out;
    attn.n_heads = int(c_.n_heads);
    attn.n_kv_heads = int(c_.n_kv_heads);
    attn.head_dim = int(c_.head_dim);
    attn.scale = 1.0f / std::sqrt(float(c_.head_dim));
    paged_attention_rows(attn, stream_);
  }
  // x += o(attn); normed = rms_norm(x) with the MLP norm.
  void attention_output(const CudaLlamaLayer& layer, const void* attn, void* x) {
    dense_gemm_bf16(lt_, attn, layer.o.dense.get(), proj_.get(), rows_, layer.o.rows, layer.o.cols,
                    stream_);
    norm(x, proj_.get(), layer.mlp_norm);
  }
  // act = silu(gate)·up from normed().
  void gate_up(const CudaLlamaLayer& layer) {
    dense_gemm_bf16(lt_, normed_.get(), layer.gate_up.dense.get(), gate_up_.get(), rows_,
                    layer.gate_up.rows, layer.gate_up.cols, stream_);
    silu_mul(gate_up_.get(), act_.get(), c_.intermediate, stream_, rows_);
  }
  // x += down(act); normed_ is scratch (`next_norm` only shapes the discarded output).
  void down(const CudaLlamaLayer& layer, void* x, const DeviceBuffer& next_norm) {
    dense_gemm_bf16(lt_, act_.get(), layer.down.dense.get(), proj_.get(), rows_, layer.down.rows,
                    layer.down.cols, stream_);
    norm(x, proj_.get(), next_norm);
  }

 private:
  const CudaLlamaConfig& c_;
  cudaStream_t stream_;
  int64_t rows_ = 0, n_tiles_ = 0, qkv_cols_ = 0;
  int blocks_per_seq_ = 0;
  LtGemm lt_;
  DeviceBuffer seq_, position_, tiles_, seq_len_, block_tables_, inv_freq_, k_cache_, v_cache_;
  DeviceBuffer normed_, qkv_, proj_, gate_up_, act_;
};

void check_dense(const CudaLinear& w, int64_t layer, const char* name) {
  NIBBLE_CHECK(w.dense.bytes() == size_t(w.rows * w.cols) * 2 && !w.quantized && !w.fp8 && !w.int8,
               "GPTQ: layer {} {} is not a dense bf16 weight", layer, name);
}

}  // namespace

GptqModelResult gptq_quantize_llama(CudaLlama& model, const std::vector<int32_t>& tokens,
                                    const GptqCalibration& cal, const GptqSolverOptions& options,
                                    const std::function<void(int64_t)>& progress) {
  const CudaLlamaConfig& c = model.config();
  NIBBLE_CHECK(cal.samples > 0 && cal.seqlen > 0 && cal.samples_per_chunk > 0 &&
                   cal.samples % cal.samples_per_chunk == 0,
               "GPTQ calibration: {} samples of {} tokens in chunks of {} (a divisor)", cal.samples,
               cal.seqlen, cal.samples_per_chunk);
  NIBBLE_CHECK(int64_t(tokens.size()) == cal.samples * cal.seqlen,
               "GPTQ calibration: {} tokens for {} samples of {}", tokens.size(), cal.samples,
               cal.seqlen);
  NIBBLE_CHECK(cal.samples_per_chunk * cal.seqlen <= 65535,
               "GPTQ calibration: {} rows per forward (at most 65535)",
               cal.samples_per_chunk * cal.seqlen);
  for (size_t i = 0; i < tokens.size(); ++i) {
    NIBBLE_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab,
                 "GPTQ calibration: token {} at {} is outside the vocabulary of {}", tokens[i], i,
                 c.vocab);
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CudaLlamaLayer& layer = model.layers[size_t(l)];
    check_dense(layer.qkv, l, "qkv");
    check_dense(layer.o, l, "o");
    check_dense(layer.gate_up, l, "gate_up");
    check_dense(layer.down, l, "down");
  }
  const auto start = Clock::now();
  cudaStream_t stream = model.stream();
  CudaGptqSolver solver(stream);
  CalibrationForward forward(model, cal, stream);
  const int64_t total = cal.samples * cal.seqlen, chunk = forward.rows();  // rows a forward
  const int64_t q_cols = c.n_heads * c.head_dim;
  // The residual stream of every calibration token, and the attention outputs (o's input).
  DeviceBuffer x(size_t(total * c.hidden) * 2), attn(size_t(total * q_cols) * 2);
  {
    DeviceBuffer ids(tokens.size() * 4);
    ids.upload(tokens.data(), ids.bytes());
    // A forward's worth of rows at a time (the lookup's grid has one row per block row).
    for (int64_t r = 0; r < total; r += chunk) {
      embedding_lookup(model.embedding.get(), ids.get<int32_t>() + r, c.hidden,
                       x.get<__nv_bfloat16>() + r * c.hidden, stream, chunk);
    }
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  const int64_t max_k = std::max({c.hidden, q_cols, c.intermediate});
  DeviceBuffer hessian(size_t(max_k * max_k) * sizeof(float));
  auto* h = hessian.get<float>();
  auto x_at = [&](int64_t ch) { return x.get<__nv_bfloat16>() + ch * chunk * c.hidden; };
  auto attn_at = [&](int64_t ch) { return attn.get<__nv_bfloat16>() + ch * chunk * q_cols; };
  const int64_t chunks = total / chunk;

  GptqModelResult result;
  // Runs `observe` over every chunk (accumulating the Hessian of a K-input group), then GPTQ of w.
  auto quantize_group = [&](CudaLinear& w, int64_t k, const std::function<void(int64_t)>& observe) {
    const auto t0 = Clock::now();
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(h, 0, size_t(k * k) * sizeof(float), stream));
    for (int64_t ch = 0; ch < chunks; ++ch) observe(ch);
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
    const auto t1 = Clock::now();
    result.forward_seconds += std::chrono::duration<double>(t1 - t0).count();
    auto* weight = w.dense.get<__nv_bfloat16>();
    result.linears.push_back(solver.quantize(weight, w.rows, w.cols, h, options, weight));
    result.solve_seconds += seconds_since(t1);
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    CudaLlamaLayer& layer = model.layers[size_t(l)];
    const DeviceBuffer& next_norm =
        l + 1 < c.n_layers ? model.layers[size_t(l + 1)].attn_norm : model.final_norm;
    quantize_group(layer.qkv, c.hidden, [&](int64_t ch) {
      forward.norm(x_at(ch), nullptr, layer.attn_norm);
      solver.accumulate_hessian(static_cast<const __nv_bfloat16*>(forward.normed()), chunk,
                                c.hidden, h);
    });
    quantize_group(layer.o, q_cols, [&](int64_t ch) {
      forward.norm(x_at(ch), nullptr, layer.attn_norm);
      forward.attention(layer, attn_at(ch));
      solver.accumulate_hessian(attn_at(ch), chunk, q_cols, h);
    });
    // x becomes the residual after attention here, once per chunk.
    quantize_group(layer.gate_up, c.hidden, [&](int64_t ch) {
      forward.attention_output(layer, attn_at(ch), x_at(ch));
      solver.accumulate_hessian(static_cast<const __nv_bfloat16*>(forward.normed()), chunk,
                                c.hidden, h);
    });
    quantize_group(layer.down, c.intermediate, [&](int64_t ch) {
      forward.norm(x_at(ch), nullptr, layer.mlp_norm);
      forward.gate_up(layer);
      solver.accumulate_hessian(static_cast<const __nv_bfloat16*>(forward.act()), chunk,
                                c.intermediate, h);
    });
    const auto t0 = Clock::now();
    for (int64_t ch = 0; ch < chunks; ++ch) {
      forward.norm(x_at(ch), nullptr, layer.mlp_norm);
      forward.gate_up(layer);
      forward.down(layer, x_at(ch), next_norm);
    }
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
    result.forward_seconds += seconds_since(t0);
    if (progress) progress(l);
  }
  result.seconds = seconds_since(start);
  return result;
}

}  // namespace nibble::cuda
