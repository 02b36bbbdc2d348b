// `nibble eval`: perplexity, KL divergence against a base model, multiple choice (ARC, PIQA,
// HellaSwag), LAMBADA and GSM8K. The conventions are in docs/eval.md.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "common_options.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/batch_scorer.h"
#include "eval/eval_inputs.h"
#include "eval/generation_backend.h"
#include "eval/gsm8k.h"
#include "eval/kl_divergence.h"
#include "eval/lambada.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"

namespace nibble::cli {
namespace {

struct EvalOptions {
  ModelOptions model;
  std::string data_dir;
  std::string json_out;  // "-" prints JSON on stdout instead of the text summary
  int64_t batch_tokens = 2048;
  // ppl / kld
  std::string file;
  int64_t context = 512;
  int64_t stride = 0;  // 0: same as context
  int64_t max_windows = 0;
  bool add_special_tokens = false;
  std::string base_path, base_logits, save_base_logits;
  int32_t top_k = 64;
  // mc / lambada / gsm8k
  std::string task;
  int64_t limit = 0;
  int64_t shots = 5;
  int64_t max_new_tokens = 256;
  // lambada / gsm8k against an OpenAI-compatible server instead of the in-process engine
  std::string base_url, served_model, api_key;
  bool by_generation = false;
  int64_t lambada_max_tokens = 16;
};

struct LoadedModel {
  ModelSource source;
  std::unique_ptr<Model> model;
};

LoadedModel load(const std::filesystem::path& path, ComputeType compute,
                 const std::string& quantization = "", const std::string& torchao_config = "") {
  LoadedModel m;
  m.source = open_model_source(path, quantization, torchao_config);
  m.model = build_model(m.source, compute);
  return m;
}

// The model under evaluation, with every quantization flag (ModelOpt quantize-and-serve too).
LoadedModel load(const ModelOptions& options) {
  LoadedModel m;
  m.source = options.open();
  m.model = build_model(m.source, options.compute_type());
  return m;
}

void emit(const EvalOptions& o, const nlohmann::json& j, const std::string& text) {
  if (o.json_out == "-") {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << text;
  if (!o.json_out.empty()) write_file_atomic(o.json_out, j.dump(2) + "\n");
}

nlohmann::json ppl_json(const eval::PerplexityResult& r) {
  return {{"ppl", r.ppl},           {"ppl_stderr", r.ppl_std_error},
          {"mean_nll", r.mean_nll}, {"nll_stderr", r.nll_std_error},
          {"tokens", r.n_tokens},   {"windows", r.n_windows}};
}

int64_t stride_of(const EvalOptions& o) { return o.stride > 0 ? o.stride : o.context; }

int run_ppl(const EvalOptions& o) {
  o.model.apply_threads();
  LoadedModel m = load(o.model);
  const auto path = eval::resolve_text_file(o.file, o.data_dir);
  const auto tokens = eval::tokenize_file(require_tokenizer(m.source), path, o.add_special_tokens);
  const auto windows =
      eval::make_windows(int64_t(tokens.size()), o.context, stride_of(o), o.max_windows);
  eval::BatchScorer scorer(*m.model,
                           {.max_batch_tokens = o.batch_tokens, .kv = o.model.kv_cache(m.source)});
  const auto r = eval::perplexity(scorer, tokens, windows);
  nlohmann::json j = ppl_json(r);
  j["model"] = m.source.path.string();
  j["file"] = path.string();
  j["context"] = o.context;
  j["stride"] = stride_of(o);
  j["text_tokens"] = tokens.size();
  emit(o, j,
       fmt::format("perplexity {:.4f} +/- {:.4f} ({} tokens in {} windows of {}, stride {})\n",
                   r.ppl, r.ppl_std_error, r.n_tokens, r.n_windows, o.context, stride_of(o)));
  return 0;
}

nlohmann::json kld_json(const eval::KldResult& r) {
  const auto& s = r.kld_summary;
  return {{"base", ppl_json(r.base)},
          {"model", ppl_json(r.model)},
          {"kld",
           {{"mean", s.mean},
            {"stderr", s.std_error},
            {"median", s.median},
            {"p99", s.p99},
            {"max", s.max}}},
          {"top1_agreement", r.top1_agreement},
          {"approximate_top_k", r.approximate ? r.top_k : 0}};
}

std::string kld_text(const eval::KldResult& r) {
  const auto& s = r.kld_summary;
  std::string out =
      fmt::format("base  ppl {:.4f} +/- {:.4f}\nmodel ppl {:.4f} +/- {:.4f}\n", r.base.ppl,
                  r.base.ppl_std_error, r.model.ppl, r.model.ppl_std_error);
  out += fmt::format("KLD mean {:.6f} +/- {:.6f}, median {:.6f}, p99 {:.6f}, max {:.6f}{}\n",
                     s.mean, s.std_error, s.median, s.p99, s.max,
                     r.approximate ? fmt::format(" (stored top-{} base)", r.top_k) : "");
  out += fmt::format("top-1 agreement {:.4f} over {} tokens\n", r.top1_agreement, s.count);
  return out;
}

int run_kld(const EvalOptions& o) {
  o.model.apply_threads();
  NIBBLE_CHECK(o.base_path.empty() != o.base_logits.empty(),
               "eval kld: give exactly one of --base (a model) or --base-logits (a file)");
  NIBBLE_CHECK(o.save_base_logits.empty() || !o.base_path.empty(),
               "eval kld: --save-base-logits needs --base");
  LoadedModel m = load(o.model);
  const auto path = eval::resolve_text_file(o.file, o.data_dir);
  const auto tokens = eval::tokenize_file(require_tokenizer(m.source), path, o.add_special_tokens);
  eval::BatchScorer scorer(*m.model,
                           {.max_batch_tokens = o.batch_tokens, .kv = o.model.kv_cache(m.source)});
  eval::KldResult r;
  if (!o.base_logits.empty()) {
    const eval::BaseLogits base = eval::load_base_logits(o.base_logits);
    r = eval::compare_with_base(base, scorer, tokens);
  } else {
    LoadedModel b = load(o.base_path, o.model.compute_type());
    eval::BatchScorer base_scorer(*b.model, {.max_batch_tokens = o.batch_tokens, .kv = {}});
    const auto windows =
        eval::make_windows(int64_t(tokens.size()), o.context, stride_of(o), o.max_windows);
    eval::BaseLogits saved;
    eval::KldOptions options{.context = o.context,
                             .stride = stride_of(o),
                             .n_text_tokens = int64_t(tokens.size()),
                             .save_top_k = o.top_k,
                             .save_base = o.save_base_logits.empty() ? nullptr : &saved};
    r = eval::compare_models(base_scorer, scorer, tokens, windows, options);
    if (!o.save_base_logits.empty()) eval::save_base_logits(o.save_base_logits, saved);
  }
  nlohmann::json j = kld_json(r);
  j["model"] = m.source.path.string();
  j["file"] = path.string();
  emit(o, j, kld_text(r));
  return 0;
}

int run_mc(const EvalOptions& o) {
  o.model.apply_threads();
  NIBBLE_CHECK(!o.task.empty(), "eval mc: --task is required");
  const bool builtin = o.task == "arc_easy" || o.task == "arc_challenge" || o.task == "piqa" ||
                       o.task == "hellaswag";
  const auto items =
      eval::load_mc_task(o.task, builtin ? eval::resolve_data_dir(o.data_dir) : "", o.limit);
  LoadedModel m = load(o.model);
  eval::BatchScorer scorer(*m.model,
                           {.max_batch_tokens = o.batch_tokens, .kv = o.model.kv_cache(m.source)});
  const auto r = eval::evaluate_multiple_choice(scorer, require_tokenizer(m.source), items);
  nlohmann::json j = {{"task", o.task},
                      {"items", r.n_items},
                      {"acc", r.acc},
                      {"acc_stderr", r.acc_stderr},
                      {"acc_norm", r.acc_norm},
                      {"acc_norm_stderr", r.acc_norm_stderr},
                      {"model", m.source.path.string()}};
  nlohmann::json per_item = nlohmann::json::array();
  for (const auto& item : r.items) {
    per_item.push_back({{"gold", item.gold},
                        {"pick", item.pick},
                        {"pick_norm", item.pick_norm},
                        {"logprobs", item.logprob},
                        {"tokens", item.n_tokens}});
  }
  j["per_item"] = std::move(per_item);
  emit(o, j,
       fmt::format("{}: acc {:.4f} +/- {:.4f}, acc_norm {:.4f} +/- {:.4f} ({} items)\n", o.task,
                   r.acc, r.acc_stderr, r.acc_norm, r.acc_norm_stderr, r.n_items));
  return 0;
}

// The in-process engine, or the server at --base-url; `loaded` keeps the model alive.
std::unique_ptr<eval::GenerationBackend> generation_backend(const EvalOptions& o,
                                                            LoadedModel& loaded) {
  if (!o.base_url.empty()) {
    return eval::make_server_backend(
        {.base_url = o.base_url, .model = o.served_model, .api_key = o.api_key, .timeout_s = 600});
  }
  NIBBLE_CHECK(o.served_model.empty() && o.api_key.empty(),
               "eval: --model and --api-key only apply with --base-url");
  loaded = load(o.model);
  return eval::make_engine_backend(*loaded.model, require_tokenizer(loaded.source),
                                   loaded.source.stop_ids, o.model.kv_cache(loaded.source),
                                   loaded.source.path.string());
}

int run_lambada(const EvalOptions& o) {
  o.model.apply_threads();
  const auto path = o.file.empty()
                        ? eval::resolve_data_dir(o.data_dir) / "eval" / "lambada_openai.jsonl"
                        : std::filesystem::path(o.file);
  const auto items = eval::load_lambada(path, o.limit);
  if (o.by_generation || !o.base_url.empty()) {
    // A server gives no log-probabilities of the prompt: score greedy generation instead.
    LoadedModel m;
    auto backend = generation_backend(o, m);
    const auto r = eval::evaluate_lambada_by_generation(*backend, items, o.lambada_max_tokens);
    nlohmann::json j = {
        {"task", "lambada_openai"},    {"scoring", "greedy generation starts with the last word"},
        {"items", r.n_items},          {"acc", r.acc},
        {"acc_stderr", r.acc_stderr},  {"ppl", nullptr},
        {"model", backend->describe()}};
    nlohmann::json per_item = nlohmann::json::array();
    for (size_t i = 0; i < items.size(); ++i) {
      per_item.push_back({{"expected", items[i].continuation},
                          {"correct", bool(r.greedy[i])},
                          {"output", r.outputs[i]}});
    }
    j["per_item"] = std::move(per_item);
    emit(o, j,
         fmt::format("lambada_openai (by generation): acc {:.4f} +/- {:.4f} ({} items)\n", r.acc,
                     r.acc_stderr, r.n_items));
    return 0;
  }
  LoadedModel m = load(o.model);
  eval::BatchScorer scorer(*m.model,
                           {.max_batch_tokens = o.batch_tokens, .kv = o.model.kv_cache(m.source)});
  const auto r = eval::evaluate_lambada(scorer, require_tokenizer(m.source), items);
  nlohmann::json j = {
      {"task", "lambada_openai"},   {"items", r.n_items}, {"acc", r.acc},
      {"acc_stderr", r.acc_stderr}, {"ppl", r.ppl},       {"model", m.source.path.string()}};
  nlohmann::json per_item = nlohmann::json::array();
  for (size_t i = 0; i < items.size(); ++i) {
    per_item.push_back({{"expected", items[i].continuation},
                        {"correct", bool(r.greedy[i])},
                        {"logprob", r.logprob[i]}});
  }
  j["per_item"] = std::move(per_item);
  emit(o, j,
       fmt::format("lambada_openai: acc {:.4f} +/- {:.4f}, ppl {:.4f} ({} items)\n", r.acc,
                   r.acc_stderr, r.ppl, r.n_items));
  return 0;
}

int run_gsm8k(const EvalOptions& o) {
  o.model.apply_threads();
  const auto data = eval::resolve_data_dir(o.data_dir);
  const auto test_path =
      o.file.empty() ? data / "eval" / "gsm8k_test.jsonl" : std::filesystem::path(o.file);
  const auto items = eval::load_gsm8k(test_path, o.limit);
  std::vector<eval::Gsm8kItem> shots;
  if (o.shots > 0) shots = eval::load_gsm8k(data / "eval" / "gsm8k_train.jsonl", o.shots);
  LoadedModel m;
  auto backend = generation_backend(o, m);
  const auto r = eval::evaluate_gsm8k(shots, items, *backend, o.max_new_tokens);
  nlohmann::json j = {
      {"task", "gsm8k"}, {"shots", shots.size()},      {"items", r.n_items},
      {"acc", r.acc},    {"acc_stderr", r.acc_stderr}, {"model", backend->describe()}};
  nlohmann::json per_item = nlohmann::json::array();
  for (const auto& item : r.items) {
    per_item.push_back({{"predicted", item.predicted},
                        {"expected", item.expected},
                        {"correct", item.correct},
                        {"output", item.output}});
  }
  j["per_item"] = std::move(per_item);
  emit(o, j,
       fmt::format("gsm8k ({}-shot): exact match {:.4f} +/- {:.4f} ({} items)\n", shots.size(),
                   r.acc, r.acc_stderr, r.n_items));
  return 0;
}

void add_common(CLI::App& sub, EvalOptions& o) {
  o.model.add(sub);
  sub.add_option("--data-dir", o.data_dir, "evaluation data folder (default: $NIBBLE_DATA)");
  sub.add_option("--json", o.json_out,
                 "also write the results as JSON to this file ('-': "
                 "print JSON instead of text)");
  sub.add_option("--batch-tokens", o.batch_tokens, "tokens per forward (several sequences)")
      ->capture_default_str();
}

void add_windows(CLI::App& sub, EvalOptions& o) {
  sub.add_option("--file", o.file, "text file (default: <data>/text/wikitext-2-raw-test.txt)");
  sub.add_option("--context", o.context, "window length in tokens")->capture_default_str();
  sub.add_option("--stride", o.stride, "window advance in tokens (default: --context)");
  sub.add_option("--max-windows", o.max_windows, "score only the first N windows (0: all)");
  sub.add_flag("--add-special-tokens", o.add_special_tokens,
               "tokenize the text with the tokenizer's special tokens (e.g. a leading BOS)");
}

void add_server(CLI::App& sub, EvalOptions& o) {
  sub.add_option("--base-url", o.base_url,
                 "score an OpenAI-compatible server (SGLang, vLLM, llama.cpp, nibble serve) at "
                 "this URL through /v1/completions instead of loading --model-path");
  sub.add_option("--model", o.served_model,
                 "with --base-url: the model name to request (default: the server's first)");
  sub.add_option("--api-key", o.api_key, "with --base-url: sent as a Bearer token");
}

std::function<int()> setup_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  app.description("Evaluate a model: perplexity, KL divergence, multiple choice, LAMBADA, GSM8K");
  app.require_subcommand(1);
  auto* ppl = app.add_subcommand("ppl", "perplexity over sliding windows of a text");
  add_common(*ppl, *o);
  add_windows(*ppl, *o);
  auto* kld = app.add_subcommand("kld", "KL(base || model) per token on the perplexity windows");
  add_common(*kld, *o);
  add_windows(*kld, *o);
  kld->add_option("--base", o->base_path, "base model (HF directory or GGUF)");
  kld->add_option("--base-logits", o->base_logits, "stored base from --save-base-logits");
  kld->add_option("--save-base-logits", o->save_base_logits,
                  "store the base's top-k log-probs to reuse with --base-logits");
  kld->add_option("--top-k", o->top_k, "log-probs kept per token by --save-base-logits")
      ->capture_default_str();
  auto* mc = app.add_subcommand("mc", "multiple choice by log-likelihood");
  add_common(*mc, *o);
  mc->add_option("--task", o->task, "arc_easy, arc_challenge, piqa, hellaswag or a file")
      ->required();
  mc->add_option("--limit", o->limit, "first N items only (0: all)");
  auto* lambada = app.add_subcommand("lambada", "LAMBADA last-word accuracy and perplexity");
  add_common(*lambada, *o);
  lambada->add_option("--file", o->file, "jsonl (default: <data>/eval/lambada_openai.jsonl)");
  lambada->add_option("--limit", o->limit, "first N items only (0: all)");
  lambada->add_flag("--by-generation", o->by_generation,
                    "score greedy generation (what --base-url does) instead of log-likelihood");
  lambada
      ->add_option("--max-new-tokens", o->lambada_max_tokens,
                   "tokens generated per item when scoring by generation")
      ->capture_default_str();
  add_server(*lambada, *o);
  auto* gsm8k = app.add_subcommand("gsm8k", "GSM8K exact match by greedy generation");
  add_common(*gsm8k, *o);
  gsm8k->add_option("--file", o->file, "jsonl (default: <data>/eval/gsm8k_test.jsonl)");
  gsm8k->add_option("--limit", o->limit, "first N items only (0: all)");
  gsm8k->add_option("--shots", o->shots, "few-shot examples from the train file")
      ->capture_default_str();
  gsm8k->add_option("--max-new-tokens", o->max_new_tokens)->capture_default_str();
  add_server(*gsm8k, *o);
  return [o, ppl, kld, mc, lambada, gsm8k] {
    if (ppl->parsed()) return run_ppl(*o);
    if (kld->parsed()) return run_kld(*o);
    if (mc->parsed()) return run_mc(*o);
    if (lambada->parsed()) return run_lambada(*o);
    return run_gsm8k(*o);
  };
}

NIBBLE_COMMAND(eval, setup_eval);

}  // namespace
}  // namespace nibble::cli
