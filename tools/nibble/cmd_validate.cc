// `nibble validate`: the quality gate of a (quantized) model against its reference:
// perplexity of both, KL(reference || model) and top-1 agreement on the same windows, and
// optionally multiple-choice tasks. Prints a table, writes JSON and an HTML report, and exits
// non-zero naming each failing metric.
#include <fmt/format.h>

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
#include "eval/multiple_choice.h"
#include "eval/quality_gate.h"
#include "eval/report_html.h"

namespace nibble::cli {
namespace {

struct ValidateOptions {
  std::string model_path, reference_path;
  std::string quantization, torchao_config;  // applied to the model, never the reference
  std::string dtype = "float32";
  int threads = 0;
  std::string data_dir, file;
  int64_t context = 512, stride = 0, max_windows = 32;
  int64_t batch_tokens = 2048;
  std::string tasks;  // comma-separated
  int64_t limit = 200;
  std::optional<double> max_ppl_increase, max_kld, min_top1, max_acc_drop;
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

int run_validate(const ValidateOptions& o) {
  if (o.threads > 0) ThreadPool::set_global_threads(o.threads);
  const ComputeType compute = parse_compute_type(o.dtype);
  ModelSource model_source = open_model_source(o.model_path, o.quantization, o.torchao_config);
  ModelSource reference_source = open_model_source(o.reference_path);
  auto model = build_model(model_source, compute);
  auto reference = build_model(reference_source, compute);
  const Tokenizer& tokenizer = require_tokenizer(reference_source);

  eval::ValidationReport report;
  report.model_path = o.model_path;
  report.reference_path = o.reference_path;
  report.family = eval::infer_scheme_family(model_source, model.get());
  report.thresholds = eval::default_thresholds(report.family);
  if (o.max_ppl_increase) report.thresholds.max_ppl_increase = *o.max_ppl_increase;
  if (o.max_kld) report.thresholds.max_kld = *o.max_kld;
  if (o.min_top1) report.thresholds.min_top1 = *o.min_top1;
  report.thresholds.max_acc_drop = o.max_acc_drop;
  report.context = o.context;
  report.stride = o.stride > 0 ? o.stride : o.context;

  const auto text = eval::resolve_text_file(o.file, o.data_dir);
  const auto tokens = eval::tokenize_file(tokenizer, text, false);
  const auto windows =
      eval::make_windows(int64_t(tokens.size()), report.context, report.stride, o.max_windows);
  eval::BatchScorer model_scorer(*model, {.max_batch_tokens = o.batch_tokens, .kv = {}});
  eval::BatchScorer reference_scorer(*reference, {.max_batch_tokens = o.batch_tokens, .kv = {}});
  report.kld = eval::compare_models(reference_scorer, model_scorer, tokens, windows,
                                    {.context = report.context, .stride = report.stride});

  for (const std::string& task : split_commas(o.tasks)) {
    const bool builtin =
        task == "arc_easy" || task == "arc_challenge" || task == "piqa" || task == "hellaswag";
    const auto items =
        eval::load_mc_task(task, builtin ? eval::resolve_data_dir(o.data_dir) : "", o.limit);
    const auto ref = eval::evaluate_multiple_choice(reference_scorer, tokenizer, items);
    const auto got =
        eval::evaluate_multiple_choice(model_scorer, require_tokenizer(model_source), items);
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
    report.tasks.push_back(t);
  }

  report.checks = eval::evaluate_gate(report.kld, report.tasks, report.thresholds);
  report.passed = eval::all_pass(report.checks);
  std::cout << eval::format_table(report);
  if (!o.json_out.empty()) write_file_atomic(o.json_out, eval::to_json(report).dump(2) + "\n");
  if (!o.report_out.empty()) write_file_atomic(o.report_out, eval::render_html_report(report));
  if (report.passed) return 0;
  for (const eval::GateCheck& c : report.checks) {
    if (!c.pass) {
      std::cerr << fmt::format("validate: {} = {:.6f} is {} the limit {:.6f}\n", c.metric, c.value,
                               c.upper_bound ? "above" : "below", c.limit);
    }
  }
  return 1;
}

NIBBLE_COMMAND(validate, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<ValidateOptions>();
  app.description(
      "Quality gate: perplexity, KL divergence and top-1 agreement of a model against its "
      "reference (and optional tasks); exits 1 naming the failing metrics");
  app.add_option("--model,--model-path,-m", o->model_path, "the model to check")->required();
  app.add_option("--quantization", o->quantization,
                 "quantize the model online (see `nibble serve --help`); --model-path may then be "
                 "the reference itself");
  app.add_option("--torchao-config", o->torchao_config, "torchao-style online quantization");
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
  app.add_option("--json", o->json_out, "write the results as JSON");
  app.add_option("--report", o->report_out, "write a self-contained HTML report");
  return [o] { return run_validate(*o); };
});

}  // namespace
}  // namespace nibble::cli
