#include "eval/layer_error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <optional>

#include "core/error.h"
#include "model/loader.h"
#include "quant/online.h"
#include "quant/quantized_checkpoint.h"
#include "quant/reference/dequantize.h"

namespace nibble::eval {
namespace {

// The projections create_llama_model fuses into one linear layer. Online methods quantize a
// fused weight as one matrix (a per-tensor scale spans q, k and v), so the error of q_proj
// depends on k_proj and v_proj: they must be quantized together here too.
const std::vector<std::vector<std::string>>& fused_groups() {
  static const std::vector<std::vector<std::string>> groups = {
      {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
      {"self_attn.o_proj"},
      {"mlp.gate_proj", "mlp.up_proj"},
      {"mlp.down_proj"},
  };
  return groups;
}

const CheckpointTensor& find_shaped(const Checkpoint& ckpt, const std::string& name) {
  const CheckpointTensor* t = ckpt.find(name);
  NIBBLE_CHECK(t != nullptr, "{}: missing tensor '{}'", ckpt.source(), name);
  NIBBLE_CHECK(t->shape.size() == 2, "{}: tensor '{}' has shape [{}], expected a matrix",
               ckpt.source(), name, fmt::join(t->shape, ", "));
  return *t;
}

std::string stored_format(const Checkpoint& ckpt, const CheckpointTensor& t) {
  if (const auto* q = dynamic_cast<const quant::QuantizedCheckpoint*>(&ckpt)) {
    if (auto scheme = q->linear_scheme(t.name)) return scheme->method;
  }
  return t.type;
}

double relative_error(const float* model, const float* reference, int64_t count) {
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = double(model[i]) - double(reference[i]);
    diff += d * d;
    norm += double(reference[i]) * double(reference[i]);
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : 0.0;
}

}  // namespace

std::vector<LayerWeightError> layer_weight_errors(const ModelSource& model,
                                                  const ModelSource& reference) {
  std::optional<quant::OnlineMethod> online;
  if (model.online_quantization) {
    online = quant::parse_online_method(model.quantization_flag, model.torchao_config);
  }
  const Checkpoint& mine = *model.checkpoint;
  const Checkpoint& ref = *reference.checkpoint;
  std::vector<LayerWeightError> out;
  for (int64_t block = 0; block < reference.config.num_hidden_layers; ++block) {
    const std::string prefix = fmt::format("model.layers.{}.", block);
    for (const auto& group : fused_groups()) {
      std::vector<const CheckpointTensor*> parts;
      int64_t rows = 0, cols = 0;
      for (const std::string& proj : group) {
        const std::string name = prefix + proj + ".weight";
        const CheckpointTensor& r = find_shaped(ref, name);
        const CheckpointTensor& m = find_shaped(mine, name);
        NIBBLE_CHECK(m.shape == r.shape,
                     "{}: tensor '{}' has shape [{}], the reference {} has [{}]", mine.source(),
                     name, fmt::join(m.shape, ", "), ref.source(), fmt::join(r.shape, ", "));
        NIBBLE_CHECK(cols == 0 || r.shape[1] == cols, "{}: tensor '{}' has {} columns, not {}",
                     ref.source(), name, r.shape[1], cols);
        cols = r.shape[1];
        rows += r.shape[0];
        parts.push_back(&m);
      }
      // The model's weight of the whole group, row-stacked as build_linear stacks it.
      std::vector<float> weight;
      weight.reserve(size_t(rows * cols));
      for (const CheckpointTensor* m : parts) {
        const std::vector<float> part = mine.load_f32(m->name);
        weight.insert(weight.end(), part.begin(), part.end());
      }
      std::string online_format;
      if (online) {
        // build_model leaves a layer dense when the method's group does not divide K.
        if (quant::online_shape_problem(*online, rows, cols)) {
          online_format = "dense";
        } else {
          weight = quant::dequantize(quant::quantize_online(*online, weight, rows, cols).weight);
          online_format = online->name;
        }
      }
      int64_t row_offset = 0;
      for (size_t i = 0; i < group.size(); ++i) {
        const CheckpointTensor& m = *parts[i];
        const std::vector<float> expected = ref.load_f32(m.name);
        const int64_t part_rows = m.shape[0];
        NIBBLE_CHECK(int64_t(expected.size()) == part_rows * cols,
                     "{}: tensor '{}' gave {} values, expected {}", ref.source(), m.name,
                     expected.size(), part_rows * cols);
        LayerWeightError e;
        e.name = prefix + group[i];
        e.block = block;
        e.format = online ? online_format : stored_format(mine, m);
        e.rows = part_rows;
        e.cols = cols;
        e.relative_error =
            relative_error(weight.data() + row_offset * cols, expected.data(), part_rows * cols);
        out.push_back(std::move(e));
        row_offset += part_rows;
      }
    }
  }
  return out;
}

}  // namespace nibble::eval
