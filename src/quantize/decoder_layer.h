#pragma once
// One Llama-family decoder layer in f32 for calibration (the same computation as
// model/llama.cc, over whole calibration samples rather than a KV cache), run in stages so
// that each linear group's inputs can be observed after the groups before it are quantized
// (GPTQ's true-sequential order): q/k/v → o → gate/up → down. The linears run through the
// calibration GEMM (quantize/calibration_gemm.h): same math, a different f32 summation order from
// the engine's kernels.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/model_config.h"

namespace nibble::quantize {

// The linear layers of a decoder layer, in quantization order, and the groups that share one
// input.
enum class LinearName { Q, K, V, O, Gate, Up, Down };
inline constexpr LinearName kAllLinears[] = {LinearName::Q,   LinearName::K,    LinearName::V,
                                             LinearName::O,   LinearName::Gate, LinearName::Up,
                                             LinearName::Down};
enum class InputGroup { Qkv, O, GateUp, Down };
inline constexpr InputGroup kAllGroups[] = {InputGroup::Qkv, InputGroup::O, InputGroup::GateUp,
                                            InputGroup::Down};
InputGroup input_group(LinearName name);
// "self_attn.q_proj", ..., "mlp.down_proj".
const char* linear_suffix(LinearName name);
const char* group_name(InputGroup group);

struct LayerWeights {
  // [N, K] row-major each, indexed by LinearName.
  std::vector<float> linear[7];
  std::vector<float> q_bias, k_bias, v_bias;
  std::vector<float> attn_norm, mlp_norm, q_norm, k_norm;
  std::vector<float>& operator[](LinearName n) { return linear[int(n)]; }
  const std::vector<float>& operator[](LinearName n) const { return linear[int(n)]; }
};

struct LayerDims {
  int64_t hidden = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, intermediate = 0;
  float eps = 1e-6f;
  bool qk_norm = false, attention_bias = false;
  explicit LayerDims(const ModelConfig& config);
  // Rows and columns of each linear.
  int64_t rows(LinearName name) const;
  int64_t cols(LinearName name) const;
};

// Loads layer `index` ("model.layers.<index>.") as f32.
LayerWeights load_layer_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                                int64_t index);

// Receives the inputs of a linear group, chunk by chunk: x is [m, K].
using InputSink = std::function<void(InputGroup group, const float* x, int64_t m)>;

class DecoderLayerRunner {
 public:
  // Calibration is n_samples sequences of seqlen tokens each, row-major [n_samples·seqlen, hidden].
  DecoderLayerRunner(const ModelConfig& config, int64_t n_samples, int64_t seqlen);

  const LayerDims& dims() const { return dims_; }
  int64_t tokens() const { return n_samples_ * seqlen_; }

  // Stage 1: the q/k/v input rmsnorm(x) reaches `sink`.
  void observe_qkv(const LayerWeights& w, const std::vector<float>& x, const InputSink& sink);
  // Stage 2: attention with the current q/k/v; its output (the o_proj input) is kept and
  // reaches `sink`.
  void run_attention(const LayerWeights& w, const std::vector<float>& x, const InputSink& sink);
  // Absolute maxima of K (after RoPE) and V over all tokens of the last run_attention.
  float k_amax() const { return k_amax_; }
  float v_amax() const { return v_amax_; }
  // Stage 3: x1 = x + o(attention); the gate/up input rmsnorm(x1) reaches `sink`.
  void run_o(const LayerWeights& w, const std::vector<float>& x, const InputSink& sink);
  // Stage 4: silu(gate)·up with the current gate/up weights reaches `sink` (the down input).
  void run_gate_up(const LayerWeights& w, const InputSink& sink);
  // Stage 5: the layer output x1 + down(act) into `out`.
  void run_down(const LayerWeights& w, std::vector<float>& out);

  // All stages at once (no observation): out = layer(x).
  void forward(const LayerWeights& w, const std::vector<float>& x, std::vector<float>& out);

 private:
  // Rows per chunk: whole samples, about 4096 tokens.
  int64_t chunk_rows() const;
  // Causal attention of one sample (q [T, nq], k/v [T, nkv] rows of the chunk) for the query
  // heads of one KV head, into out [T, nq]. Single-threaded (runs inside a pool task).
  void attend_sample_head(const float* q, const float* k, const float* v, int64_t kv_head,
                          float* out) const;
  void gate_up_chunk(const LayerWeights& w, int64_t r0, int64_t rows, float* act);

  LayerDims dims_;
  int64_t n_samples_, seqlen_;
  std::vector<float> cos_, sin_;         // [seqlen, head_dim/2]
  std::vector<float> attn_out_;          // [tokens, n_heads·head_dim]
  std::vector<float> x1_;                // [tokens, hidden]
  std::vector<float> act_;               // [tokens, intermediate] when it fits the budget
  std::vector<float> mlp_in_, gate_up_;  // gate_up_chunk's rmsnorm(x1) and [gate | up] rows
  bool act_stored_ = false;
  float k_amax_ = 0.0f, v_amax_ = 0.0f;
};

}  // namespace nibble::quantize
