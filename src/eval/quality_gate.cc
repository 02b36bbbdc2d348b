#include "eval/quality_gate.h"

#include <fmt/format.h>

#include "model/loader.h"

namespace nibble::eval {

SchemeFamily family_from_bits(double bits_per_weight) {
  SchemeFamily f;
  f.bits_per_weight = bits_per_weight;
  // Q4_0..Q5_K, int4 with group scales and NVFP4 land below 7 bits; Q6_K (6.56) too: its
  // error is closer to 4-bit schemes than to Q8_0's. Q8_0 (8.5), int8/fp8 with scales: 8-12.
  f.name = bits_per_weight < 7.0 ? "4-bit" : bits_per_weight < 12.0 ? "8-bit" : "16-bit";
  return f;
}

SchemeFamily infer_scheme_family(const ModelSource& source, const Model* model) {
  const ModelConfig& c = source.config;
  const double q_dim = double(c.num_attention_heads * c.head_dim);
  const double kv_dim = double(c.num_key_value_heads * c.head_dim);
  const double hidden = double(c.hidden_size);
  const double per_layer =
      hidden * q_dim * 2 + hidden * kv_dim * 2 + 3 * hidden * double(c.intermediate_size);
  const double params = per_layer * double(c.num_hidden_layers);
  double bytes = 0.0;
  if ((source.online_quantization || source.calibrated_quantization) && model != nullptr) {
    return family_from_bits(params > 0 ? double(model->layer_weight_bytes()) * 8.0 / params : 32.0);
  }
  const Checkpoint& stored = source.raw_checkpoint ? *source.raw_checkpoint : *source.checkpoint;
  for (const CheckpointTensor& t : stored.tensors()) {
    // HF names "model.layers.N." and GGUF names "blk.N." are the transformer blocks.
    if (t.name.find("layers.") != std::string::npos || t.name.rfind("blk.", 0) == 0) {
      bytes += double(t.nbytes);
    }
  }
  return family_from_bits(params > 0 ? bytes * 8.0 / params : 32.0);
}

GateThresholds default_thresholds(const SchemeFamily& family) {
  GateThresholds t;
  if (family.name == "16-bit") {
    t.max_ppl_increase = 0.005;
    t.max_kld = 0.005;
    t.min_top1 = 0.97;
  } else if (family.name == "8-bit") {
    t.max_ppl_increase = 0.02;
    t.max_kld = 0.02;
    t.min_top1 = 0.93;
  } else {
    t.max_ppl_increase = 0.15;
    t.max_kld = 0.15;
    t.min_top1 = 0.80;
  }
  return t;
}

std::vector<GateCheck> evaluate_gate(const KldResult& kld, const std::vector<TaskComparison>& tasks,
                                     const GateThresholds& thresholds) {
  std::vector<GateCheck> checks;
  auto add = [&](std::string metric, double value, double limit, bool upper) {
    GateCheck c{std::move(metric), value, limit, upper, upper ? value <= limit : value >= limit};
    checks.push_back(std::move(c));
  };
  add("ppl_increase", (kld.model.ppl - kld.base.ppl) / kld.base.ppl, thresholds.max_ppl_increase,
      true);
  add("kld_mean", kld.kld_summary.mean, thresholds.max_kld, true);
  add("top1_agreement", kld.top1_agreement, thresholds.min_top1, false);
  if (thresholds.max_acc_drop) {
    for (const TaskComparison& t : tasks) {
      add(t.task + "_acc_drop", t.reference_acc - t.model_acc, *thresholds.max_acc_drop, true);
    }
  }
  return checks;
}

bool all_pass(const std::vector<GateCheck>& checks) {
  for (const GateCheck& c : checks) {
    if (!c.pass) return false;
  }
  return true;
}

nlohmann::json to_json(const ValidationReport& r) {
  nlohmann::json j;
  j["model"] = r.model_path;
  j["quantization"] = r.quantization;
  j["label"] = r.label;
  j["reference"] = r.reference_path;
  j["scheme_family"] = r.family.name;
  j["bits_per_weight"] = r.family.bits_per_weight;
  j["context"] = r.context;
  j["stride"] = r.stride;
  j["windows"] = r.kld.base.n_windows;
  j["tokens"] = r.kld.base.n_tokens;
  j["reference_ppl"] = {{"ppl", r.kld.base.ppl}, {"stderr", r.kld.base.ppl_std_error}};
  j["model_ppl"] = {{"ppl", r.kld.model.ppl}, {"stderr", r.kld.model.ppl_std_error}};
  const SampleSummary& s = r.kld.kld_summary;
  j["kld"] = {{"mean", s.mean}, {"stderr", s.std_error}, {"median", s.median},
              {"p99", s.p99},   {"max", s.max},          {"approximate_top_k", r.kld.approximate}};
  j["top1_agreement"] = r.kld.top1_agreement;
  j["tasks"] = nlohmann::json::array();
  for (const TaskComparison& t : r.tasks) {
    j["tasks"].push_back({{"task", t.task},
                          {"items", t.n_items},
                          {"reference_acc", t.reference_acc},
                          {"model_acc", t.model_acc},
                          {"reference_acc_norm", t.reference_acc_norm},
                          {"model_acc_norm", t.model_acc_norm},
                          {"pick_agreement", t.pick_agreement}});
  }
  j["checks"] = nlohmann::json::array();
  for (const GateCheck& c : r.checks) {
    j["checks"].push_back({{"metric", c.metric},
                           {"value", c.value},
                           {"limit", c.limit},
                           {"bound", c.upper_bound ? "max" : "min"},
                           {"pass", c.pass}});
  }
  j["layers"] = nlohmann::json::array();
  for (const LayerWeightError& l : r.layers) {
    j["layers"].push_back({{"name", l.name},
                           {"block", l.block},
                           {"format", l.format},
                           {"rows", l.rows},
                           {"cols", l.cols},
                           {"relative_error", l.relative_error}});
  }
  j["passed"] = r.passed;
  return j;
}

nlohmann::json to_json(const std::vector<ValidationReport>& reports) {
  nlohmann::json j;
  j["models"] = nlohmann::json::array();
  bool passed = true;
  for (const ValidationReport& r : reports) {
    j["models"].push_back(to_json(r));
    passed = passed && r.passed;
  }
  j["passed"] = passed;
  return j;
}

namespace {

const LayerWeightError* worst_layer(const ValidationReport& r) {
  const LayerWeightError* worst = nullptr;
  for (const LayerWeightError& l : r.layers) {
    if (worst == nullptr || l.relative_error > worst->relative_error) worst = &l;
  }
  return worst;
}

}  // namespace

std::string format_table(const ValidationReport& r) {
  std::string out;
  out += fmt::format("model      {}  ({}, {:.2f} bits/weight)\n", r.model_path, r.family.name,
                     r.family.bits_per_weight);
  out += fmt::format("reference  {}\n", r.reference_path);
  out += fmt::format("windows    {} x {} tokens (stride {}), {} scored tokens\n\n",
                     r.kld.base.n_windows, r.context, r.stride, r.kld.base.n_tokens);
  out += fmt::format("{:<22} {:>12} {:>12}\n", "", "reference", "model");
  out += fmt::format("{:<22} {:>12.4f} {:>12.4f}\n", "perplexity", r.kld.base.ppl, r.kld.model.ppl);
  out += fmt::format("{:<22} {:>12.4f} {:>12.4f}\n", "  +/- (stderr)", r.kld.base.ppl_std_error,
                     r.kld.model.ppl_std_error);
  for (const TaskComparison& t : r.tasks) {
    out +=
        fmt::format("{:<22} {:>12.4f} {:>12.4f}\n", t.task + " acc", t.reference_acc, t.model_acc);
    out += fmt::format("{:<22} {:>12.4f} {:>12.4f}\n", t.task + " acc_norm", t.reference_acc_norm,
                       t.model_acc_norm);
  }
  const SampleSummary& s = r.kld.kld_summary;
  out += fmt::format("\nKLD mean {:.6f} +/- {:.6f}, median {:.6f}, p99 {:.6f}, max {:.6f}\n",
                     s.mean, s.std_error, s.median, s.p99, s.max);
  out += fmt::format("top-1 agreement {:.4f}\n", r.kld.top1_agreement);
  if (const LayerWeightError* w = worst_layer(r)) {
    double sum = 0.0;
    for (const LayerWeightError& l : r.layers) sum += l.relative_error;
    out += fmt::format("weight error ||Wq-W||/||W|| mean {:.5f} over {} layers, max {:.5f} ({})\n",
                       sum / double(r.layers.size()), r.layers.size(), w->relative_error, w->name);
  }
  out += "\n";
  out += fmt::format("{:<22} {:>12} {:>12}  {}\n", "check", "value", "limit", "result");
  for (const GateCheck& c : r.checks) {
    out += fmt::format("{:<22} {:>12.6f} {:>3}{:>9.6f}  {}\n", c.metric, c.value,
                       c.upper_bound ? "<=" : ">=", c.limit, c.pass ? "pass" : "FAIL");
  }
  out += r.passed ? "\nPASSED\n" : "\nFAILED\n";
  return out;
}

std::string format_comparison_table(const std::vector<ValidationReport>& reports) {
  if (reports.empty()) return "";
  std::string out = fmt::format("reference  {}\n\n", reports.front().reference_path);
  std::string header = fmt::format("{:<40} {:>6} {:>10} {:>8} {:>9} {:>7}", "model", "bits", "ppl",
                                   "d_ppl", "kld_mean", "top1");
  for (const TaskComparison& t : reports.front().tasks) header += fmt::format(" {:>12}", t.task);
  header += fmt::format(" {:>9}  {}\n", "max_werr", "gate");
  out += header;
  const ValidationReport& first = reports.front();
  out += fmt::format("{:<40} {:>6} {:>10.4f} {:>+7.2f}% {:>9.5f} {:>7.4f}", "(reference)", "-",
                     first.kld.base.ppl, 0.0, 0.0, 1.0);
  for (const TaskComparison& t : first.tasks) out += fmt::format(" {:>12.4f}", t.reference_acc);
  out += fmt::format(" {:>9}  {}\n", "-", "-");
  for (const ValidationReport& r : reports) {
    const double increase = (r.kld.model.ppl - r.kld.base.ppl) / r.kld.base.ppl;
    out += fmt::format("{:<40} {:>6.2f} {:>10.4f} {:>+7.2f}% {:>9.5f} {:>7.4f}", r.label,
                       r.family.bits_per_weight, r.kld.model.ppl, 100.0 * increase,
                       r.kld.kld_summary.mean, r.kld.top1_agreement);
    for (const TaskComparison& t : r.tasks) out += fmt::format(" {:>12.4f}", t.model_acc);
    const LayerWeightError* w = worst_layer(r);
    out += fmt::format(" {:>9}  {}\n", w ? fmt::format("{:.5f}", w->relative_error) : "-",
                       r.passed ? "pass" : "FAIL");
  }
  return out;
}

}  // namespace nibble::eval
