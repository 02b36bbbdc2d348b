#include "model/linear_builder.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "backend/cpu/quant/quant_linear_options.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_file.h"
#include "quant/quantized_checkpoint.h"
#include "quant/reference/dequantize.h"
#include "quant/stack.h"

namespace nibble {
namespace {

cpu::WeightType weight_type(ComputeType compute) {
  return compute == ComputeType::BF16 ? cpu::WeightType::BF16 : cpu::WeightType::F32;
}

const CheckpointTensor& checked_tensor(const Checkpoint& ckpt, const std::string& name,
                                       const std::vector<int64_t>& shape) {
  const CheckpointTensor* t = ckpt.find(name);
  if (!t) fail("{}: missing tensor '{}'", ckpt.source(), name);
  if (t->shape != shape) {
    fail("{}: tensor '{}' has shape [{}], expected [{}]", ckpt.source(), name,
         fmt::join(t->shape, ", "), fmt::join(shape, ", "));
  }
  return *t;
}

// A GGUF tensor stored in a ggml block type, as a QuantizedTensor of raw blocks. F32/F16/BF16
// tensors are not "quantized" and load dense.
std::optional<quant::LinearScheme> gguf_block_scheme(const Checkpoint& ckpt,
                                                     const CheckpointTensor& t) {
  const auto type = gguf::type_from_name(t.type);
  if (!type || *type == gguf::GgmlType::F32 || *type == gguf::GgmlType::F16 ||
      *type == gguf::GgmlType::BF16)
    return std::nullopt;
  if (!gguf::can_dequantize(*type))
    fail("{}: tensor '{}' has unsupported type {}", ckpt.source(), t.name, t.type);
  quant::LinearScheme scheme;
  scheme.method = "gguf";
  quant::QuantizedTensor& w = scheme.weight;
  w.elem = quant::ElemType::GgufBlock;
  w.gguf_type = static_cast<int>(*type);
  w.rows = t.shape[0];
  w.cols = t.shape[1];
  w.row_bytes = static_cast<int64_t>(gguf::row_bytes(*type, w.cols));
  NIBBLE_CHECK(uint64_t(w.row_bytes * w.rows) == t.nbytes,
               "{}: tensor '{}' holds {} bytes, {} rows of {} {} values need {}", ckpt.source(),
               t.name, t.nbytes, w.rows, w.cols, t.type, w.row_bytes * w.rows);
  w.codes.assign(t.data, t.data + t.nbytes);
  return scheme;
}

std::optional<quant::LinearScheme> stored_scheme(const Checkpoint& ckpt,
                                                 const CheckpointTensor& t) {
  if (const auto* q = dynamic_cast<const quant::QuantizedCheckpoint*>(&ckpt)) {
    if (auto scheme = q->linear_scheme(t.name)) {
      quant::validate(scheme->weight, fmt::format("{}: {}", ckpt.source(), t.name));
      NIBBLE_CHECK(scheme->weight.rows == t.shape[0] && scheme->weight.cols == t.shape[1],
                   "{}: layer '{}' decoded to [{}, {}] but its tensors declare [{}]", ckpt.source(),
                   t.name, scheme->weight.rows, scheme->weight.cols, fmt::join(t.shape, ", "));
      return scheme;
    }
    return std::nullopt;
  }
  return gguf_block_scheme(ckpt, t);
}

// Parts of a fused projection that could not share one layout: each runs on its own and writes
// its slice of the output columns.
class ConcatLinear final : public cpu::LinearWeight {
 public:
  explicit ConcatLinear(std::vector<std::unique_ptr<cpu::LinearWeight>> parts)
      : parts_(std::move(parts)) {
    for (const auto& p : parts_) rows_ += p->rows();
  }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return parts_.front()->cols(); }
  size_t nbytes() const override {
    size_t total = 0;
    for (const auto& p : parts_) total += p->nbytes();
    return total;
  }
  std::string describe() const override {
    std::vector<std::string> names;
    for (const auto& p : parts_) names.push_back(p->describe());
    return fmt::format("[{}]", fmt::join(names, " | "));
  }
  void forward(const float* x, int64_t m_rows, const float* bias, float* y) const override {
    thread_local std::vector<float> part_out;
    int64_t offset = 0;
    for (const auto& p : parts_) {
      const int64_t n = p->rows();
      part_out.resize(size_t(m_rows * n));
      p->forward(x, m_rows, bias ? bias + offset : nullptr, part_out.data());
      for (int64_t m = 0; m < m_rows; ++m)
        std::memcpy(y + m * rows_ + offset, part_out.data() + m * n, size_t(n) * sizeof(float));
      offset += n;
    }
  }

 private:
  std::vector<std::unique_ptr<cpu::LinearWeight>> parts_;
  int64_t rows_ = 0;
};

}  // namespace

std::vector<float> load_checked(const Checkpoint& checkpoint, const std::string& name,
                                const std::vector<int64_t>& shape) {
  checked_tensor(checkpoint, name, shape);
  std::vector<float> values = checkpoint.load_f32(name);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  NIBBLE_CHECK(int64_t(values.size()) == count, "{}: tensor '{}' gave {} values, expected {}",
               checkpoint.source(), name, values.size(), count);
  return values;
}

std::unique_ptr<cpu::LinearWeight> build_linear(const Checkpoint& checkpoint,
                                                const std::vector<std::string>& names,
                                                const std::vector<int64_t>& rows, int64_t cols,
                                                const LinearBuildOptions& options) {
  NIBBLE_CHECK(!names.empty() && names.size() == rows.size(), "build_linear: {} names, {} rows",
               names.size(), rows.size());
  const cpu::WeightType fallback = weight_type(options.compute);
  cpu::QuantLinearOptions kernel_options;
  kernel_options.int8_activations_for_weight_only = options.int8_activations_for_weight_only;
  std::vector<std::optional<quant::LinearScheme>> schemes;
  for (size_t i = 0; i < names.size(); ++i) {
    const CheckpointTensor& t = checked_tensor(checkpoint, names[i], {rows[i], cols});
    schemes.push_back(stored_scheme(checkpoint, t));
  }
  const bool all_quantized =
      std::all_of(schemes.begin(), schemes.end(), [](const auto& s) { return s.has_value(); });
  const bool none_quantized =
      std::none_of(schemes.begin(), schemes.end(), [](const auto& s) { return s.has_value(); });

  if (none_quantized) {
    std::vector<float> all;
    int64_t total = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      std::vector<float> part = load_checked(checkpoint, names[i], {rows[i], cols});
      all.insert(all.end(), part.begin(), part.end());
      total += rows[i];
    }
    // Fused projections quantize as one matrix, as SGLang's fused QKV/gate-up modules do.
    std::optional<quant::LinearScheme> scheme;
    if (options.online) scheme = options.online(all, total, cols);
    if (!scheme) return cpu::make_dense_linear(cpu::DenseMatrix(fallback, total, cols, all));
    all.clear();
    all.shrink_to_fit();
    return cpu::make_quantized_linear(scheme->weight, scheme->act, fallback, kernel_options);
  }

  if (all_quantized) {
    bool same_act = true;
    std::vector<const quant::QuantizedTensor*> weights;
    for (const auto& s : schemes) {
      weights.push_back(&s->weight);
      same_act = same_act && quant::same_act_quant(s->act, schemes.front()->act);
    }
    if (same_act) {
      if (auto stacked = quant::stack_rows(weights)) {
        return cpu::make_quantized_linear(*stacked, schemes.front()->act, fallback, kernel_options);
      }
    }
  }

  std::vector<std::unique_ptr<cpu::LinearWeight>> parts;
  for (size_t i = 0; i < names.size(); ++i) {
    if (schemes[i]) {
      parts.push_back(cpu::make_quantized_linear(schemes[i]->weight, schemes[i]->act, fallback,
                                                 kernel_options));
    } else {
      parts.push_back(cpu::make_dense_linear(cpu::DenseMatrix(
          fallback, rows[i], cols, load_checked(checkpoint, names[i], {rows[i], cols}))));
    }
  }
  if (parts.size() == 1) return std::move(parts.front());
  return std::make_unique<ConcatLinear>(std::move(parts));
}

}  // namespace nibble
