// `nibble validate`: the quality gate of a (quantized) model against its reference:
// perplexity of both, KL(reference || model) and top-1 agreement on the same windows, and
// optionally multiple-choice tasks, and the relative weight error of every linear layer. Several
// models (or online methods) are judged against one reference side by side. Prints a table,
// writes JSON and an HTML report, and exits non-zero naming each failing metric.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "command.h"
#include "common_options.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "eval/batch_scorer.h"
#include "eval/eval_inputs.h"
#include "eval/kl_divergence.h"
#include "eval/layer_error.h"
#include "eval/multiple_choice.h"
#include "eval/quality_gate.h"
#include "eval/report_html.h"

namespace nibble::cli {
namespace {

struct ValidateOptions {
  std::vector<std::string> model_paths;
  std::string reference_path;
  // Applied to the models, never the reference; comma-separated lists, one run per entry.
  std::vector<std::string> quantizations, torchao_configs;
  std::string dtype = "float32";
  int threads = 0;
  std::string data_dir, file;
  int64_t context = 512, stride = 0, max_windows = 32;
  int64_t batch_tokens = 2048;
  std::string tasks;  // comma-separated
  int64_t limit = 200;
  std::optional<double> max_ppl_increase, max_kld, min_top1, max_acc_drop;
  bool no_layer_errors = false;
  std::string json_out, report_out;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// One model under test: a path and the online method applied to it at load ("" for none).
struct Candidate {
  std::string path, quantization, torchao_config, label;
};

// Every --model, as stored when no method is listed, else once per listed method ("none": as
// stored), so `--model M --quantization none,fp8,int4` compares three variants of M.
std::vector<Candidate> make_candidates(const ValidateOptions& o) {
  std::vector<Candidate> out;
  for (const std::string& path : o.model_paths) {
    std::string name = std::filesystem::path(path).filename().string();
    if (name.empty()) name = path;
    if (o.quantizations.empty() && o.torchao_configs.empty()) {
      out.push_back({path, "", "", name});
      continue;
    }
    for (const std::string& q : o.quantizations) {
      if (q == "none") {
        out.push_back({path, "", "", name});
      } else {
        out.push_back({path, q, "", fmt::format("{} --quantization {}", name, q)});
      }
    }
    for (const std::string& t : o.torchao_configs) {
      if (t == "none") {
        out.push_back({path, "", "", name});
      } else {
        out.push_back({path, "", t, fmt::format("{} --torchao-config {}", name, t)});
      }
    }
  }
  return out;
}

eval::TaskComparison compare_task(const std::string& task, const eval::McResult& ref,
                                  const eval::McResult& got) {
  eval::TaskComparison t;
  t.task = task;
  t.n_items = ref.n_items;
  t.reference_acc = ref.acc;
  t.model_acc = got.acc;
  t.reference_acc_norm = ref.acc_norm;
  t.model_acc_norm = got.acc_norm;
  int64_t same = 0;
  for (size_t i = 0; i < ref.items.size(); ++i) same += ref.items[i].pick == got.items[i].pick;
  t.pick_agreement = double(same) / double(std::max<int64_t>(t.n_items, 1));
  return t;
}

int run_validate(const ValidateOptions& o) {
  if (o.threads > 0) ThreadPool::set_global_threads(o.threads);
  const ComputeType compute = parse_compute_type(o.dtype);
  const std::vector<Candidate> candidates = make_candidates(o);
  NIBBLE_CHECK(!candidates.empty(), "validate: --model: no model given");
  // Opened (and, for online methods, the method names checked) before any slow work starts.
  std::vector<ModelSource> sources;
  for (const Candidate& c : candidates) {
    sources.push_back(open_model_source(c.path, c.quantization, c.torchao_config));
    // modelopt_fp8 / modelopt_fp4 on an unquantized model: calibrated and quantized here.
    quantize::prepare_quantize_and_serve(sources.back(), {});
  }
  ModelSource reference_source = open_model_source(o.reference_path);
  auto reference = build_model(reference_source, compute);
  const Tokenizer& tokenizer = require_tokenizer(reference_source);
  eval::BatchScorer reference_scorer(*reference, {.max_batch_tokens = o.batch_tokens, .kv = {}});

  const int64_t stride = o.stride > 0 ? o.stride : o.context;
  const auto text = eval::resolve_text_file(o.file, o.data_dir);
  const auto tokens = eval::tokenize_file(tokenizer, text, false);
  const auto windows = eval::make_windows(int64_t(tokens.size()), o.context, stride, o.max_windows);

  // The reference's task results are the same for every model: computed once.
  struct TaskRun {
    std::string name;
    std::vector<eval::McItem> items;
    eval::McResult reference;
  };
  std::vector<TaskRun> tasks;
  for (const std::string& task : split_commas(o.tasks)) {
    const bool builtin =
        task == "arc_easy" || task == "arc_challenge" || task == "piqa" || task == "hellaswag";
    TaskRun run{
        task,
        eval::load_mc_task(task, builtin ? eval::resolve_data_dir(o.data_dir) : "", o.limit),
        {}};
    run.reference = eval::evaluate_multiple_choice(reference_scorer, tokenizer, run.items);
    tasks.push_back(std::move(run));
  }

  std::vector<eval::ValidationReport> reports;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    const ModelSource& source = sources[i];
    eval::ValidationReport report;
    report.model_path = c.path;
    report.quantization =
        source.online_quantization || source.calibrated_quantization ? source.quantization : "";
    report.label = c.label;
    report.reference_path = o.reference_path;
    report.context = o.context;
    report.stride = stride;
    {
      // One model in memory at a time besides the reference.
      auto model = build_model(source, compute);
      report.family = eval::infer_scheme_family(source, model.get());
      eval::BatchScorer model_scorer(*model, {.max_batch_tokens = o.batch_tokens, .kv = {}});
      report.kld = eval::compare_models(reference_scorer, model_scorer, tokens, windows,
                                        {.context = report.context, .stride = report.stride});
      for (const TaskRun& task : tasks) {
        const auto got =
            eval::evaluate_multiple_choice(model_scorer, require_tokenizer(source), task.items);
        report.tasks.push_back(compare_task(task.name, task.reference, got));
      }
    }
    report.thresholds = eval::default_thresholds(report.family);
    if (o.max_ppl_increase) report.thresholds.max_ppl_increase = *o.max_ppl_increase;
    if (o.max_kld) report.thresholds.max_kld = *o.max_kld;
    if (o.min_top1) report.thresholds.min_top1 = *o.min_top1;
    report.thresholds.max_acc_drop = o.max_acc_drop;
    report.checks = eval::evaluate_gate(report.kld, report.tasks, report.thresholds);
    report.passed = eval::all_pass(report.checks);
    // Calibrated weights exist only inside the built model, not as a checkpoint to compare.
    if (!o.no_layer_errors && !source.calibrated_quantization)
      report.layers = eval::layer_weight_errors(source, reference_source);
    if (candidates.size() > 1) {
      std::cerr << fmt::format("validate: {} {} ({}/{})\n", c.label,
                               report.passed ? "passed" : "FAILED", i + 1, candidates.size());
    }
    reports.push_back(std::move(report));
  }

  for (const eval::ValidationReport& r : reports) {
    if (reports.size() > 1) std::cout << "== " << r.label << "\n";
    std::cout << eval::format_table(r) << (reports.size() > 1 ? "\n" : "");
  }
  if (reports.size() > 1) std::cout << eval::format_comparison_table(reports);
  if (!o.json_out.empty()) {
    const nlohmann::json j =
        reports.size() == 1 ? eval::to_json(reports.front()) : eval::to_json(reports);
    write_file_atomic(o.json_out, j.dump(2) + "\n");
  }
  if (!o.report_out.empty()) write_file_atomic(o.report_out, eval::render_html_report(reports));
  bool passed = true;
  for (const eval::ValidationReport& r : reports) {
    for (const eval::GateCheck& c : r.checks) {
      if (c.pass) continue;
      passed = false;
      std::cerr << fmt::format("validate: {}{} = {:.6f} is {} the limit {:.6f}\n",
                               reports.size() > 1 ? r.label + ": " : "", c.metric, c.value,
                               c.upper_bound ? "above" : "below", c.limit);
    }
  }
  return passed ? 0 : 1;
}

NIBBLE_COMMAND(validate, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<ValidateOptions>();
  app.description(
      "Quality gate: perplexity, KL divergence and top-1 agreement of a model against its "
      "reference (and optional tasks); exits 1 naming the failing metrics");
  app.add_option("--model,--model-path,-m", o->model_paths,
                 "the model to check; repeat it to compare several side by side")
      ->required();
  app.add_option("--quantization", o->quantizations,
                 "quantize the model online (see `nibble serve --help`); --model-path may then be "
                 "the reference itself. A comma-separated list runs each method ('none': as "
                 "stored) side by side")
      ->delimiter(',');
  app.add_option("--torchao-config", o->torchao_configs,
                 "torchao-style online quantization; a comma-separated list as --quantization")
      ->delimiter(',');
  app.add_option("--reference,-r", o->reference_path, "the reference model (e.g. bf16)")
      ->required();
  app.add_option("--dtype", o->dtype, "compute type of both models")->capture_default_str();
  app.add_option("--threads,-t", o->threads, "CPU threads (0: all cores)");
  app.add_option("--data-dir", o->data_dir, "evaluation data folder (default: $NIBBLE_DATA)");
  app.add_option("--file", o->file, "text (default: <data>/text/wikitext-2-raw-test.txt)");
  app.add_option("--context", o->context, "window length in tokens")->capture_default_str();
  app.add_option("--stride", o->stride, "window advance (default: --context)");
  app.add_option("--max-windows", o->max_windows, "windows to score (0: the whole text)")
      ->capture_default_str();
  app.add_option("--batch-tokens", o->batch_tokens, "tokens per forward")->capture_default_str();
  app.add_option("--tasks", o->tasks,
                 "comma-separated multiple-choice tasks (arc_easy, arc_challenge, piqa, "
                 "hellaswag)");
  app.add_option("--limit", o->limit, "items per task")->capture_default_str();
  app.add_option("--max-ppl-increase", o->max_ppl_increase,
                 "relative perplexity increase allowed (default: by scheme family)");
  app.add_option("--max-kld", o->max_kld, "mean KLD allowed (default: by scheme family)");
  app.add_option("--min-top1", o->min_top1, "top-1 agreement required (default: by family)");
  app.add_option("--max-acc-drop", o->max_acc_drop,
                 "gate task accuracy: absolute drop allowed (default: tasks are reported only)");
  app.add_flag("--no-layer-errors", o->no_layer_errors,
               "skip the per-layer weight error (it reads every linear weight of both models "
               "once more)");
  app.add_option("--json", o->json_out,
                 "write the results as JSON (several models: {\"models\": [...], \"passed\"})");
  app.add_option("--report", o->report_out, "write a self-contained HTML report");
  return [o] { return run_validate(*o); };
});

}  // namespace
}  // namespace nibble::cli
