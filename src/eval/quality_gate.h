#pragma once
// `nibble validate`: the pass/fail gate of a quantized model against its reference. Default
// thresholds depend on the scheme family, inferred from the stored bits per weight of the
// transformer layers (docs/eval.md): < 7 bits "4-bit", < 12 bits "8-bit", else "16-bit".
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/kl_divergence.h"
#include "eval/layer_error.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::eval {

struct SchemeFamily {
  std::string name;  // "4-bit", "8-bit", "16-bit"
  double bits_per_weight = 0.0;
};

// Bytes stored for all tensors of the transformer blocks (weights, scales, zero points,
// norms) over the parameter count of their linear layers implied by the config.
// From the stored bytes of the transformer blocks; a model quantized online at load is judged by
// the bytes its built layers hold (`model`), since its files are still dense.
SchemeFamily infer_scheme_family(const ModelSource& source, const Model* model = nullptr);
SchemeFamily family_from_bits(double bits_per_weight);

struct GateThresholds {
  double max_ppl_increase = 0.0;       // relative: (ppl_model - ppl_ref) / ppl_ref
  double max_kld = 0.0;                // mean KL(ref || model), nats
  double min_top1 = 0.0;               // top-1 agreement with the reference
  std::optional<double> max_acc_drop;  // absolute task accuracy drop (acc), if gated
};

GateThresholds default_thresholds(const SchemeFamily& family);

struct GateCheck {
  std::string metric;
  double value = 0.0, limit = 0.0;
  bool upper_bound = true;  // value must be <= limit (else >= limit)
  bool pass = true;
};

struct TaskComparison {
  std::string task;
  int64_t n_items = 0;
  double reference_acc = 0.0, model_acc = 0.0;
  double reference_acc_norm = 0.0, model_acc_norm = 0.0;
  double pick_agreement = 0.0;  // fraction of items where both pick the same choice
};

std::vector<GateCheck> evaluate_gate(const KldResult& kld, const std::vector<TaskComparison>& tasks,
                                     const GateThresholds& thresholds);

bool all_pass(const std::vector<GateCheck>& checks);

struct ValidationReport {
  std::string model_path, reference_path;
  std::string quantization;  // the online method applied to model_path ("" when none)
  std::string label;         // how the model is named side by side: path and method
  SchemeFamily family;
  GateThresholds thresholds;
  KldResult kld;
  int64_t context = 0, stride = 0;
  std::vector<TaskComparison> tasks;
  std::vector<GateCheck> checks;
  std::vector<LayerWeightError> layers;  // empty when not computed
  bool passed = false;
};

nlohmann::json to_json(const ValidationReport& report);
// Several models against one reference: {"models": [...], "passed": every model passed}.
nlohmann::json to_json(const std::vector<ValidationReport>& reports);
// A fixed-width table for the terminal.
std::string format_table(const ValidationReport& report);
// One row per model: bits, perplexity, KLD, top-1, task accuracies, worst layer, gate.
std::string format_comparison_table(const std::vector<ValidationReport>& reports);

}  // namespace nibble::eval
