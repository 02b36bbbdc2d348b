#include "quantize/in_memory_model.h"

#include <unordered_map>

#include "core/error.h"
#include "model/linear_builder.h"
#include "model/llama.h"
#include "model/loader.h"
#include "quant/stack.h"
#include "quantize/decoder_layer.h"

namespace nibble::quantize {
namespace {

// The source checkpoint with some dense tensors replaced (norm weights that absorbed
// SmoothQuant/AWQ scales).
class OverlayCheckpoint final : public Checkpoint {
 public:
  OverlayCheckpoint(std::shared_ptr<Checkpoint> inner,
                    const std::map<std::string, std::vector<float>>& overrides)
      : inner_(std::move(inner)), overrides_(overrides) {}
  std::string source() const override { return inner_->source(); }
  const std::vector<CheckpointTensor>& tensors() const override { return inner_->tensors(); }
  const CheckpointTensor* find(std::string_view name) const override { return inner_->find(name); }
  std::vector<float> load_f32(std::string_view name) const override {
    const auto it = overrides_.find(std::string(name));
    if (it != overrides_.end()) return it->second;
    return inner_->load_f32(name);
  }

 private:
  std::shared_ptr<Checkpoint> inner_;
  const std::map<std::string, std::vector<float>>& overrides_;
};

// 2-D scale blocks [bn, bk] restated as per-row blocks [1, bk]: the same values, but a layout
// that stacks with parts whose row counts are not multiples of bn (k/v of FP8_BLOCK on a small
// model). The loader runs such parts side by side instead, so logits may differ in the last
// bits of the kernels' summation order, not in any weight.
quant::QuantizedTensor per_row_blocks(const quant::QuantizedTensor& t) {
  if (t.scale_block_rows == 1 || t.scales.empty()) return t;
  quant::QuantizedTensor out = t;
  out.scale_block_rows = 1;
  out.scale_rows = t.rows;
  out.scales.assign(static_cast<size_t>(t.rows * t.scale_cols), 0.0f);
  for (int64_t n = 0; n < t.rows; ++n)
    for (int64_t g = 0; g < t.scale_cols; ++g)
      out.scales[size_t(n * t.scale_cols + g)] =
          t.scales[size_t((n / t.scale_block_rows) * t.scale_cols + g)];
  return out;
}

}  // namespace

std::unique_ptr<Model> build_in_memory_model(const ModelSource& source, const QuantizedModel& model,
                                             ComputeType compute) {
  const OverlayCheckpoint overlay(source.checkpoint, model.overrides);
  // The model builds each layer's linears in a fixed order (q/k/v, o, gate/up, down), handing
  // each dense fused weight to the online hook: answer with the pipeline's layers, stacked.
  static constexpr LinearName kFused[4][3] = {
      {LinearName::Q, LinearName::K, LinearName::V},
      {LinearName::O, LinearName::O, LinearName::O},
      {LinearName::Gate, LinearName::Up, LinearName::Up},
      {LinearName::Down, LinearName::Down, LinearName::Down}};
  static constexpr int kParts[4] = {3, 1, 2, 1};
  auto calls = std::make_shared<int64_t>(0);
  LinearBuildOptions options;
  options.compute = compute;
  options.online = [&model, calls](std::span<const float>, int64_t rows,
                                   int64_t cols) -> std::optional<quant::LinearScheme> {
    const int64_t index = (*calls)++;
    const int64_t layer = index / 4, slot = index % 4;
    std::vector<const quant::LinearScheme*> parts;
    for (int i = 0; i < kParts[slot]; ++i) {
      const auto it = model.linears.find(linear_module(layer, linear_suffix(kFused[slot][i])));
      if (it != model.linears.end()) parts.push_back(&it->second);
    }
    if (parts.empty()) return std::nullopt;
    NIBBLE_CHECK(int(parts.size()) == kParts[slot],
                 "in-memory model: layer {} has a fused projection only partly quantized", layer);
    std::vector<const quant::QuantizedTensor*> weights;
    for (const auto* p : parts) {
      NIBBLE_CHECK(quant::same_act_quant(p->act, parts.front()->act),
                   "in-memory model: layer {}: fused parts quantize activations differently",
                   layer);
      weights.push_back(&p->weight);
    }
    auto stacked = quant::stack_rows(weights);
    std::vector<quant::QuantizedTensor> expanded;
    if (!stacked) {
      for (const auto* w : weights) expanded.push_back(per_row_blocks(*w));
      std::vector<const quant::QuantizedTensor*> again;
      for (const auto& e : expanded) again.push_back(&e);
      stacked = quant::stack_rows(again);
    }
    NIBBLE_CHECK(stacked.has_value(), "in-memory model: layer {}: parts cannot be stacked", layer);
    NIBBLE_CHECK(stacked->rows == rows && stacked->cols == cols,
                 "in-memory model: layer {}: quantized [{}, {}] for a [{}, {}] weight", layer,
                 stacked->rows, stacked->cols, rows, cols);
    quant::LinearScheme s;
    s.method = parts.front()->method;
    s.weight = std::move(*stacked);
    s.act = parts.front()->act;
    return s;
  };
  return create_llama_model(source.config, overlay, options);
}

}  // namespace nibble::quantize
