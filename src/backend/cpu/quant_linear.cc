// Quantized linear layers on the CPU: the weight is repacked once (backend/cpu/quant/
// packed_weight.h) and each call quantizes the activations per the scheme, then runs the
// dispatched kernel split over output rows. Integer weights with int8 activations take the
// int8 dot-product kernels (a8); everything else packable takes the decode-in-registers
// kernels (a16) with the activations quantized-dequantized first, so that the numerics are the
// scheme's; a layout without a kernel is dequantized to a dense matrix, still with the
// activation quantization.
#include <algorithm>
#include <optional>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_weight.h"
#include "backend/cpu/quant/activation_quant.h"
#include "backend/cpu/quant/packed_weight.h"
#include "backend/cpu/quant/quant_linear_options.h"
#include "backend/cpu/quant/reference_kernels.h"
#include "core/thread_pool.h"
#include "quant/reference/dequantize.h"
#include "quant/scheme.h"
#include "quant/types.h"

namespace nibble::cpu {
namespace {

// Output rows per work unit: a multiple of every kernel's row tile (4, 2, 1).
constexpr int64_t kRowUnit = 16;
// Rows of x per activation-quantization task.
constexpr int64_t kActRowGrain = 4;

const char* act_name(quant::ActQuantKind kind) {
  switch (kind) {
    case quant::ActQuantKind::None: return "a16";
    case quant::ActQuantKind::DynamicPerTokenInt8: return "a8 int8/token";
    case quant::ActQuantKind::StaticPerTensorInt8: return "a8 int8/tensor";
    case quant::ActQuantKind::DynamicPerTokenFp8: return "fp8/token";
    case quant::ActQuantKind::DynamicPerTokenGroupFp8: return "fp8/token-group";
    case quant::ActQuantKind::StaticPerTensorFp8: return "fp8/tensor";
    case quant::ActQuantKind::Nvfp4: return "nvfp4";
  }
  return "?";
}

class PackedLinear final : public LinearWeight {
 public:
  PackedLinear(PackedQuantWeight weight, const quant::ActQuant& act, bool int8_kernel)
      : w_(std::move(weight)), act_(act), a8_(int8_kernel) {
    // A weight-only layer sent to the a8 kernels quantizes x per weight group: per-token
    // scales cost SmolLM2 ~3% perplexity (docs/quantization.md), per-group ones almost none.
    x_per_group_ = a8_ && act_.kind == quant::ActQuantKind::None;
  }
  int64_t rows() const override { return w_.rows; }
  int64_t cols() const override { return w_.cols; }
  size_t nbytes() const override { return w_.nbytes(); }
  std::string describe() const override {
    const bool four = quant_codes_are_4bit(w_.codes_kind);
    std::string s = w_.source + (four ? " w4" : " w8");
    s += a8_ ? "a8" : "a16";
    if (x_per_group_) s += " (x int8/group)";
    if (!a8_ && act_.kind != quant::ActQuantKind::None)
      s += std::string(" (x as ") + act_name(act_.kind) + ")";
    return s + " (" + kernels().name + ")";
  }

  void forward(const float* x, int64_t m_rows, const float* bias, float* y) const override {
    if (m_rows <= 0) return;
    const KernelTable& kt = kernels();
    QuantMatmulArgs args = w_.kernel_args();
    args.m_rows = m_rows;
    args.bias = bias;
    args.y = y;
    args.ldy = w_.rows;
    ThreadPool& pool = ThreadPool::global();
    const int64_t K = w_.cols, KP = w_.k_padded;
    const int32_t* perm = w_.k_permutation.empty() ? nullptr : w_.k_permutation.data();
    thread_local std::vector<int8_t> xq;
    thread_local std::vector<float> x_scale, x_fake, x_padded, x_group_sums, x_group_scales;
    thread_local std::vector<int32_t> xsum;
    QuantMatmulFn fn;
    if (a8_) {
      xq.resize(size_t(m_rows * KP));
      const int64_t ng = w_.n_groups;
      // Buffers are thread_local: the workers must get this thread's pointers, not their own.
      int8_t* xq_out = xq.data();
      if (x_per_group_) {
        x_group_scales.resize(size_t(m_rows * ng));
        x_group_sums.resize(size_t(m_rows * ng));
        float* scales_out = x_group_scales.data();
        float* sums_out = x_group_sums.data();
        pool.parallel_for(m_rows, kActRowGrain, [&](int64_t r0, int64_t r1) {
          quantize_activations_int8_per_group(x + r0 * K, r1 - r0, K, perm, KP, w_.group_size, ng,
                                              xq_out + r0 * KP, scales_out + r0 * ng,
                                              sums_out + r0 * ng);
        });
        args.x_group_scale = scales_out;
        args.xgsum = sums_out;
      } else {
        x_scale.resize(size_t(m_rows));
        const bool sums = w_.has_mins || w_.codes_kind == QuantCodes::U4Sym;
        xsum.resize(sums ? size_t(m_rows * ng) : 0);
        float* scale_out = x_scale.data();
        int32_t* sum_out = sums ? xsum.data() : nullptr;
        pool.parallel_for(m_rows, kActRowGrain, [&](int64_t r0, int64_t r1) {
          quantize_activations_int8(act_, x + r0 * K, r1 - r0, K, perm, KP, xq_out + r0 * KP,
                                    scale_out + r0, w_.group_size, ng,
                                    sum_out ? sum_out + r0 * ng : nullptr);
        });
        args.x_scale = scale_out;
        args.xsum = sum_out;
      }
      args.xq = xq_out;
      args.ldx = KP;
      fn = kt.quant_matmul_a8;
    } else {
      const float* in = x;
      if (act_.kind != quant::ActQuantKind::None) {
        x_fake.resize(size_t(m_rows * K));
        float* fake_out = x_fake.data();
        pool.parallel_for(m_rows, kActRowGrain, [&](int64_t r0, int64_t r1) {
          fake_quantize_activations(act_, x + r0 * K, r1 - r0, K, fake_out + r0 * K);
        });
        in = x_fake.data();
      }
      args.x = in;
      args.ldx = K;
      if (perm || KP != K) {
        x_padded.assign(size_t(m_rows * KP), 0.0f);
        for (int64_t r = 0; r < m_rows; ++r) {
          float* dst = x_padded.data() + r * KP;
          const float* src = in + r * K;
          for (int64_t k = 0; k < K; ++k) dst[k] = src[perm ? perm[k] : k];
        }
        args.x = x_padded.data();
        args.ldx = KP;
      }
      if ((w_.has_mins || w_.codes_kind == QuantCodes::U4Sym) && w_.group_size != 16) {
        x_group_sums.resize(size_t(m_rows * w_.n_groups));
        for (int64_t r = 0; r < m_rows; ++r) {
          const float* row = args.x + r * args.ldx;
          for (int64_t g = 0; g < w_.n_groups; ++g) {
            float sum = 0.0f;
            const int64_t end = std::min(KP, (g + 1) * w_.group_size);
            for (int64_t k = g * w_.group_size; k < end; ++k) sum += row[k];
            x_group_sums[size_t(r * w_.n_groups + g)] = sum;
          }
        }
        args.xgsum = x_group_sums.data();
      }
      fn = kt.quant_matmul_a16;
    }
    const int64_t n = w_.rows;
    const int64_t units = (n + kRowUnit - 1) / kRowUnit;
    pool.parallel_for(units, 1, [&](int64_t begin, int64_t end) {
      fn(args, begin * kRowUnit, std::min(n, end * kRowUnit));
    });
  }

  // The kernels' weight: d_g · value(code) + mn_g in f32, U4Sym's - 8 inside value. Rows stored
  // in act-order are not in K order: no row lookups from them.
  bool weight_row(int64_t n, float* out) const override {
    if (!w_.k_permutation.empty() || n < 0 || n >= w_.rows) return false;
    const QuantMatmulArgs a = w_.kernel_args();
    const uint8_t* row = a.codes + n * a.code_row_bytes;
    for (int64_t k = 0; k < w_.cols; ++k) {
      const int64_t g = n * a.n_groups + k / a.group_size;
      float w = quant_code_value(a.codes_kind, quant_packed_code(a, row, k)) *
                quant_param(a.scales, a.params_f16, g);
      if (a.mins) w += quant_param(a.mins, a.params_f16, g);
      out[k] = w;
    }
    return true;
  }

 private:
  PackedQuantWeight w_;
  quant::ActQuant act_;
  bool a8_;
  bool x_per_group_ = false;
};

// No kernel for this layout: a dense matrix, with the activation quantization still applied.
class DequantizedLinear final : public LinearWeight {
 public:
  DequantizedLinear(DenseMatrix matrix, const quant::ActQuant& act, std::string source)
      : matrix_(std::move(matrix)), act_(act), source_(std::move(source)) {}
  int64_t rows() const override { return matrix_.rows(); }
  int64_t cols() const override { return matrix_.cols(); }
  size_t nbytes() const override { return matrix_.nbytes(); }
  std::string describe() const override {
    std::string s = std::string(matrix_.type() == WeightType::F32 ? "f32" : "bf16") +
                    " (dequantized " + source_ + ")";
    if (act_.kind != quant::ActQuantKind::None) s += std::string(" x as ") + act_name(act_.kind);
    return s;
  }
  void forward(const float* x, int64_t m_rows, const float* bias, float* y) const override {
    if (act_.kind == quant::ActQuantKind::None) {
      linear(matrix_, bias, x, m_rows, y);
      return;
    }
    thread_local std::vector<float> x_fake;
    x_fake.resize(size_t(m_rows * matrix_.cols()));
    fake_quantize_activations(act_, x, m_rows, matrix_.cols(), x_fake.data());
    linear(matrix_, bias, x_fake.data(), m_rows, y);
  }
  bool weight_row(int64_t n, float* out) const override {
    matrix_.row_f32(n, out);
    return true;
  }

 private:
  DenseMatrix matrix_;
  quant::ActQuant act_;
  std::string source_;
};

bool a8_codes(const PackedQuantWeight& w) {
  return (w.codes_kind == QuantCodes::U4Sym || w.codes_kind == QuantCodes::U4 ||
          w.codes_kind == QuantCodes::S8) &&
         w.group_size % 32 == 0;
}

}  // namespace

std::unique_ptr<LinearWeight> make_quantized_linear(const quant::QuantizedTensor& weight,
                                                    const quant::ActQuant& act, WeightType fallback,
                                                    const QuantLinearOptions& options) {
  std::optional<PackedQuantWeight> packed = pack_quantized_weight(weight);
  if (packed) {
    const bool wants_a8 =
        int8_kernel_activations(act) ||
        (act.kind == quant::ActQuantKind::None && options.int8_activations_for_weight_only);
    const bool a8 = wants_a8 && a8_codes(*packed);
    if (a8) use_nibbles64(*packed);
    return std::make_unique<PackedLinear>(std::move(*packed), act, a8);
  }
  const std::vector<float> dense = quant::dequantize(weight);
  const std::string source = weight.elem == quant::ElemType::GgufBlock
                                 ? "gguf type " + std::to_string(weight.gguf_type)
                                 : std::string(quant::elem_name(weight.elem));
  return std::make_unique<DequantizedLinear>(DenseMatrix(fallback, weight.rows, weight.cols, dense),
                                             act, source);
}

std::unique_ptr<LinearWeight> make_quantized_linear(const quant::QuantizedTensor& weight,
                                                    const quant::ActQuant& act,
                                                    WeightType fallback) {
  return make_quantized_linear(weight, act, fallback, QuantLinearOptions{});
}

}  // namespace nibble::cpu
