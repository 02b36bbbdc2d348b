#include "quantize/decoder_layer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/kernel_table.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/blocks/rope.h"
#include "model/linear_builder.h"
#include "quantize/calibration_gemm.h"

namespace nibble::quantize {
namespace {

// y[m, n] = x[m, :]·W[n, :] (+ bias) for W [n_rows, k], x rows packed at stride k.
void project(const std::vector<float>& w, int64_t n_rows, int64_t k, const std::vector<float>& bias,
             const float* x, int64_t m_rows, float* y, int64_t ldy) {
  calibration_linear(w.data(), n_rows, k, bias.empty() ? nullptr : bias.data(), x, k, m_rows, y,
                     ldy);
}

// Keeping silu(gate)·up for the final stage saves recomputing gate/up; past this size (large
// models) it is recomputed chunk by chunk instead.
constexpr int64_t kActBudgetBytes = int64_t(2) << 30;

// Query rows per causal attention block: the scores of one block ([64, seqlen] f32) stay in L2.
constexpr int64_t kAttentionQueryBlock = 64;

}  // namespace

InputGroup input_group(LinearName name) {
  switch (name) {
    case LinearName::Q:
    case LinearName::K:
    case LinearName::V: return InputGroup::Qkv;
    case LinearName::O: return InputGroup::O;
    case LinearName::Gate:
    case LinearName::Up: return InputGroup::GateUp;
    case LinearName::Down:
    default: return InputGroup::Down;
  }
}

const char* linear_suffix(LinearName name) {
  static const char* const names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                      "mlp.down_proj"};
  return names[int(name)];
}

const char* group_name(InputGroup group) {
  static const char* const names[] = {"qkv", "o", "gate_up", "down"};
  return names[int(group)];
}

LayerDims::LayerDims(const ModelConfig& c) {
  hidden = c.hidden_size;
  n_heads = c.num_attention_heads;
  n_kv_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : n_heads;
  head_dim = c.head_dim > 0 ? c.head_dim : hidden / std::max<int64_t>(n_heads, 1);
  intermediate = c.intermediate_size;
  eps = c.rms_norm_eps;
  qk_norm = c.qk_norm;
  attention_bias = c.attention_bias;
  NIBBLE_CHECK(hidden > 0 && n_heads > 0 && head_dim > 0 && intermediate > 0 &&
                   n_heads % n_kv_heads == 0 && head_dim % 2 == 0,
               "quantize: unsupported attention shape (hidden {}, heads {}/{}, head_dim {})",
               hidden, n_heads, n_kv_heads, head_dim);
}

int64_t LayerDims::rows(LinearName name) const {
  switch (name) {
    case LinearName::Q: return n_heads * head_dim;
    case LinearName::K:
    case LinearName::V: return n_kv_heads * head_dim;
    case LinearName::O:
    case LinearName::Down: return hidden;
    default: return intermediate;
  }
}

int64_t LayerDims::cols(LinearName name) const {
  switch (name) {
    case LinearName::O: return n_heads * head_dim;
    case LinearName::Down: return intermediate;
    default: return hidden;
  }
}

LayerWeights load_layer_weights(const Checkpoint& ckpt, const ModelConfig& config, int64_t index) {
  const LayerDims d(config);
  const std::string p = fmt::format("model.layers.{}.", index);
  LayerWeights w;
  for (LinearName n : kAllLinears)
    w[n] = load_checked(ckpt, p + linear_suffix(n) + ".weight", {d.rows(n), d.cols(n)});
  if (d.attention_bias) {
    w.q_bias = load_checked(ckpt, p + "self_attn.q_proj.bias", {d.rows(LinearName::Q)});
    w.k_bias = load_checked(ckpt, p + "self_attn.k_proj.bias", {d.rows(LinearName::K)});
    w.v_bias = load_checked(ckpt, p + "self_attn.v_proj.bias", {d.rows(LinearName::V)});
  }
  if (d.qk_norm) {
    w.q_norm = load_checked(ckpt, p + "self_attn.q_norm.weight", {d.head_dim});
    w.k_norm = load_checked(ckpt, p + "self_attn.k_norm.weight", {d.head_dim});
  }
  w.attn_norm = load_checked(ckpt, p + "input_layernorm.weight", {d.hidden});
  w.mlp_norm = load_checked(ckpt, p + "post_attention_layernorm.weight", {d.hidden});
  return w;
}

DecoderLayerRunner::DecoderLayerRunner(const ModelConfig& config, int64_t n_samples, int64_t seqlen)
    : dims_(config), n_samples_(n_samples), seqlen_(seqlen) {
  const int64_t half = dims_.head_dim / 2;
  const std::vector<float> inv_freq = rope_inv_freq(config, dims_.head_dim);
  cos_.resize(size_t(seqlen * half));
  sin_.resize(size_t(seqlen * half));
  for (int64_t t = 0; t < seqlen; ++t)
    rope_cos_sin(inv_freq, t, cos_.data() + t * half, sin_.data() + t * half);
}

int64_t DecoderLayerRunner::chunk_rows() const {
  const int64_t samples = std::max<int64_t>(1, 4096 / seqlen_);
  return samples * seqlen_;
}

void DecoderLayerRunner::observe_qkv(const LayerWeights& w, const std::vector<float>& x,
                                     const InputSink& sink) {
  const int64_t hidden = dims_.hidden, chunk = chunk_rows();
  std::vector<float> h;
  for (int64_t r0 = 0; r0 < tokens(); r0 += chunk) {
    const int64_t rows = std::min(chunk, tokens() - r0);
    h.resize(size_t(rows * hidden));
    cpu::rmsnorm_rows(x.data() + r0 * hidden, w.attn_norm.data(), rows, hidden, dims_.eps,
                      h.data());
    sink(InputGroup::Qkv, h.data(), rows);
  }
}

void DecoderLayerRunner::attend_sample_head(const float* q, const float* k, const float* v,
                                            int64_t kv_head, float* out) const {
  const int64_t hd = dims_.head_dim, T = seqlen_;
  const int64_t nq = dims_.n_heads * hd, nkv = dims_.n_kv_heads * hd;
  const int64_t group = dims_.n_heads / dims_.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  thread_local std::vector<float> kh, vt, qh, scores;
  kh.resize(size_t(T * hd));
  vt.resize(size_t(hd * T));
  qh.resize(size_t(T * hd));
  scores.resize(size_t(kAttentionQueryBlock * T));
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(kh.data() + t * hd, k + t * nkv + kv_head * hd, size_t(hd) * 4);
    for (int64_t d = 0; d < hd; ++d) vt[size_t(d * T + t)] = v[size_t(t * nkv + kv_head * hd + d)];
  }
  const cpu::MatmulFn matmul = cpu::kernels().matmul_f32;
  for (int64_t hh = kv_head * group; hh < (kv_head + 1) * group; ++hh) {
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(qh.data() + t * hd, q + t * nq + hh * hd, size_t(hd) * 4);
    // Causal: query rows [q0, q1) see keys [0, q1) only. Each score and each output is the
    // kernel's dot product over the same elements as a full T × T computation (the skipped
    // keys only ever contributed exact zeros), so the result does not depend on the blocking.
    for (int64_t q0 = 0; q0 < T; q0 += kAttentionQueryBlock) {
      const int64_t q1 = std::min(T, q0 + kAttentionQueryBlock);
      cpu::MatmulArgs a;  // scores = Q·Kᵀ with K as the "weight"
      a.x = qh.data() + q0 * hd;
      a.ldx = hd;
      a.m_rows = q1 - q0;
      a.k = hd;
      a.w = kh.data();
      a.ldw = hd;
      a.y = scores.data();
      a.ldy = T;
      matmul(a, 0, q1);
      for (int64_t i = q0; i < q1; ++i) {
        float* row = scores.data() + (i - q0) * T;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, row[j] * scale);
        float sum = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          row[j] = std::exp(row[j] * scale - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        for (int64_t j = i + 1; j < q1; ++j) row[j] = 0.0f;
      }
      cpu::MatmulArgs pv;  // out = P·V with Vᵀ as the "weight"
      pv.x = scores.data();
      pv.ldx = T;
      pv.m_rows = q1 - q0;
      pv.k = q1;
      pv.w = vt.data();
      pv.ldw = T;
      pv.y = out + q0 * nq + hh * hd;
      pv.ldy = nq;
      matmul(pv, 0, hd);
    }
  }
}

void DecoderLayerRunner::run_attention(const LayerWeights& w, const std::vector<float>& x,
                                       const InputSink& sink) {
  const int64_t hidden = dims_.hidden, hd = dims_.head_dim, half = hd / 2;
  const int64_t nq = dims_.n_heads * hd, nkv = dims_.n_kv_heads * hd;
  const int64_t T = seqlen_;
  attn_out_.resize(size_t(tokens() * nq));
  k_amax_ = v_amax_ = 0.0f;
  std::vector<float> h, q, k, v;
  // Whole samples at a time: the projections run as one batched matmul per chunk, then every
  // (sample, KV head) pair is one single-threaded task; a parallel region per head of every
  // sample would cost a pool barrier each.
  const int64_t chunk = chunk_rows();
  for (int64_t r0 = 0; r0 < tokens(); r0 += chunk) {
    const int64_t rows = std::min(chunk, tokens() - r0);
    h.resize(size_t(rows * hidden));
    q.resize(size_t(rows * nq));
    k.resize(size_t(rows * nkv));
    v.resize(size_t(rows * nkv));
    cpu::rmsnorm_rows(x.data() + r0 * hidden, w.attn_norm.data(), rows, hidden, dims_.eps,
                      h.data());
    project(w[LinearName::Q], nq, hidden, w.q_bias, h.data(), rows, q.data(), nq);
    project(w[LinearName::K], nkv, hidden, w.k_bias, h.data(), rows, k.data(), nkv);
    project(w[LinearName::V], nkv, hidden, w.v_bias, h.data(), rows, v.data(), nkv);
    if (dims_.qk_norm) {
      cpu::rmsnorm_rows(q.data(), w.q_norm.data(), rows * dims_.n_heads, hd, dims_.eps, q.data());
      cpu::rmsnorm_rows(k.data(), w.k_norm.data(), rows * dims_.n_kv_heads, hd, dims_.eps,
                        k.data());
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = (r0 + r) % T;
      const float* c = cos_.data() + t * half;
      const float* sn = sin_.data() + t * half;
      for (int64_t hh = 0; hh < dims_.n_heads; ++hh)
        apply_rope(q.data() + r * nq + hh * hd, hd, c, sn);
      for (int64_t hh = 0; hh < dims_.n_kv_heads; ++hh)
        apply_rope(k.data() + r * nkv + hh * hd, hd, c, sn);
    }
    for (int64_t i = 0; i < rows * nkv; ++i) {
      k_amax_ = std::max(k_amax_, std::fabs(k[size_t(i)]));
      v_amax_ = std::max(v_amax_, std::fabs(v[size_t(i)]));
    }
    const int64_t samples = rows / T;
    ThreadPool::global().parallel_for(
        samples * dims_.n_kv_heads, 1, [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t s = task / dims_.n_kv_heads, kvh = task % dims_.n_kv_heads;
            attend_sample_head(q.data() + s * T * nq, k.data() + s * T * nkv,
                               v.data() + s * T * nkv, kvh, attn_out_.data() + (r0 + s * T) * nq);
          }
        });
    sink(InputGroup::O, attn_out_.data() + r0 * nq, rows);
  }
}

void DecoderLayerRunner::run_o(const LayerWeights& w, const std::vector<float>& x,
                               const InputSink& sink) {
  const int64_t hidden = dims_.hidden, nq = dims_.n_heads * dims_.head_dim;
  x1_.resize(size_t(tokens() * hidden));
  project(w[LinearName::O], hidden, nq, {}, attn_out_.data(), tokens(), x1_.data(), hidden);
  cpu::add_inplace(x1_.data(), x.data(), tokens() * hidden);
  const int64_t chunk = chunk_rows();
  std::vector<float> h;
  for (int64_t r0 = 0; r0 < tokens(); r0 += chunk) {
    const int64_t rows = std::min(chunk, tokens() - r0);
    h.resize(size_t(rows * hidden));
    cpu::rmsnorm_rows(x1_.data() + r0 * hidden, w.mlp_norm.data(), rows, hidden, dims_.eps,
                      h.data());
    sink(InputGroup::GateUp, h.data(), rows);
  }
}

void DecoderLayerRunner::gate_up_chunk(const LayerWeights& w, int64_t r0, int64_t rows,
                                       float* act) {
  const int64_t hidden = dims_.hidden, inter = dims_.intermediate;
  // Reused across layers: a fresh 0.8 GB gate/up buffer per layer cost 200k page faults each.
  std::vector<float>& h = mlp_in_;
  std::vector<float>& gu = gate_up_;
  h.resize(size_t(rows * hidden));
  gu.resize(size_t(rows * 2 * inter));
  cpu::rmsnorm_rows(x1_.data() + r0 * hidden, w.mlp_norm.data(), rows, hidden, dims_.eps, h.data());
  // Gate and up write the two halves of each [gate | up] row that silu_mul_rows reads.
  project(w[LinearName::Gate], inter, hidden, {}, h.data(), rows, gu.data(), 2 * inter);
  project(w[LinearName::Up], inter, hidden, {}, h.data(), rows, gu.data() + inter, 2 * inter);
  cpu::silu_mul_rows(gu.data(), rows, inter, act);
}

void DecoderLayerRunner::run_gate_up(const LayerWeights& w, const InputSink& sink) {
  const int64_t inter = dims_.intermediate;
  act_stored_ = tokens() * inter * int64_t(sizeof(float)) <= kActBudgetBytes;
  // Whole-batch when stored (one weight conversion); else chunk by chunk.
  if (act_stored_) {
    act_.resize(size_t(tokens() * inter));
    gate_up_chunk(w, 0, tokens(), act_.data());
    const int64_t chunk = chunk_rows();
    for (int64_t r0 = 0; r0 < tokens(); r0 += chunk)
      sink(InputGroup::Down, act_.data() + r0 * inter, std::min(chunk, tokens() - r0));
    return;
  }
  act_.clear();
  act_.shrink_to_fit();
  const int64_t chunk = chunk_rows();
  std::vector<float> act;
  for (int64_t r0 = 0; r0 < tokens(); r0 += chunk) {
    const int64_t rows = std::min(chunk, tokens() - r0);
    act.resize(size_t(rows * inter));
    gate_up_chunk(w, r0, rows, act.data());
    sink(InputGroup::Down, act.data(), rows);
  }
}

void DecoderLayerRunner::run_down(const LayerWeights& w, std::vector<float>& out) {
  const int64_t hidden = dims_.hidden, inter = dims_.intermediate;
  out.resize(size_t(tokens() * hidden));
  if (act_stored_) {
    project(w[LinearName::Down], hidden, inter, {}, act_.data(), tokens(), out.data(), hidden);
  } else {
    const int64_t chunk = chunk_rows();
    std::vector<float> act;
    for (int64_t r0 = 0; r0 < tokens(); r0 += chunk) {
      const int64_t rows = std::min(chunk, tokens() - r0);
      act.resize(size_t(rows * inter));
      gate_up_chunk(w, r0, rows, act.data());
      project(w[LinearName::Down], hidden, inter, {}, act.data(), rows, out.data() + r0 * hidden,
              hidden);
    }
  }
  cpu::add_inplace(out.data(), x1_.data(), tokens() * hidden);
  // act_ keeps its capacity for the next layer (same size; freeing it re-faults 0.4 GB).
}

void DecoderLayerRunner::forward(const LayerWeights& w, const std::vector<float>& x,
                                 std::vector<float>& out) {
  const InputSink none = [](InputGroup, const float*, int64_t) {};
  run_attention(w, x, none);
  run_o(w, x, none);
  run_gate_up(w, none);
  run_down(w, out);
}

}  // namespace nibble::quantize
