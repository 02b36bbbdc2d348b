// `nibble quantize`: offline quantization with calibration (RTN, GPTQ, AWQ, SmoothQuant), layer
// by layer, exported as a checkpoint that SGLang, vLLM and transformers load
// (compressed-tensors, GPTQ, AWQ, fp8). Progress and per-layer errors go to stderr.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "command.h"
#include "common_options.h"
#include "convert_gguf.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/memory_stats.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/gguf/gguf_kquant.h"
#include "formats/gguf/gguf_writer.h"
#include "formats/npy.h"
#include "formats/safetensors/safetensors_writer.h"
#include "model/gguf_names.h"
#include "model/loader.h"
#include "quant/reference/dequantize.h"
#include "quantize/export_formats.h"
#include "quantize/in_memory_model.h"
#include "quantize/pipeline.h"
#include "quantize/recipe.h"
#include "runtime/kv_cache.h"

namespace nibble::cli {
namespace {

struct QuantizeOptions {
  std::string model_path;
  std::string scheme = "W4A16";
  std::string method;  // default: gptq for integer schemes, rtn otherwise
  std::string format;  // default: compressed-tensors (gguf for GGUF types)
  int64_t group_size = 0;
  bool asym = false, sym = false;
  bool act_order = false, static_groups = false;
  double damp_percent = 0.01;
  float smoothquant_alpha = 0.5f;
  std::string calib;
  int64_t nsamples = 128, seqlen = 512;
  uint64_t seed = 0;
  std::vector<std::string> ignore;
  std::string out;
  std::string recipe_file;
  std::string kv_cache_scheme;
  std::string save_calibration, load_calibration;
  std::string save_imatrix;
  std::string logits_prompts, logits_out;
  std::string report;
  std::string save_dequantized;
  int threads = 0;
  bool force = false, quiet = false;
};

std::vector<float> all_position_logits(Model& model, const std::vector<int32_t>& prompt) {
  const ModelConfig& config = model.config();
  const int64_t block = 16;
  const int64_t n_blocks = int64_t(prompt.size()) / block + 2;
  KvCache cache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, block,
                n_blocks);
  ForwardBatch batch;
  batch.token_ids = prompt;
  SequenceBatch seq;
  seq.n_tokens = int64_t(prompt.size());
  seq.want_logits = true;
  for (int64_t i = 0; i < n_blocks; ++i) seq.block_table.push_back(*cache.allocate_block());
  batch.seqs = {seq};
  std::vector<float> logits;
  model.forward_all_logits(batch, cache, logits);
  return logits;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// llama.cpp's GGUF imatrix (what llama-imatrix writes and llama-quantize --imatrix reads):
// general.type "imatrix", per linear `<gguf name>.in_sum2` (Σ x² per input column, F32
// [1, K]) and `<gguf name>.counts` (tokens, F32 [1, 1]); llama-quantize uses in_sum2 / counts.
void write_imatrix(const quantize::QuantizedModel& model, const std::string& calib,
                   const std::string& path) {
  gguf::GgufWriter writer(path);
  writer.add_string("general.type", "imatrix");
  writer.add_string_array("imatrix.datasets", {calib.empty() ? std::string("boolq.jsonl") : calib});
  writer.add_uint32("imatrix.chunk_count", uint32_t(model.calibration_samples));
  writer.add_uint32("imatrix.chunk_size", uint32_t(model.calibration_seqlen));
  for (const auto& [module, entry] : model.importance) {
    const auto name = hf_to_gguf_name(module + ".weight");
    NIBBLE_CHECK(name.has_value(), "--save-imatrix: '{}' has no GGUF name", module);
    const auto& [mean_square, count] = entry;
    std::vector<float> sums(mean_square.size());
    for (size_t i = 0; i < sums.size(); ++i) sums[i] = mean_square[i] * float(count);
    const auto bytes = [](const std::vector<float>& v) {
      return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                  reinterpret_cast<const uint8_t*>(v.data() + v.size()));
    };
    writer.add_tensor(*name + ".in_sum2", gguf::GgmlType::F32, {1, int64_t(sums.size())},
                      bytes(sums));
    writer.add_tensor(*name + ".counts", gguf::GgmlType::F32, {1, 1}, bytes({float(count)}));
  }
  writer.write();
}

int run_quantize(const QuantizeOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  // RSS counts the memory-mapped source checkpoint's pages, which the kernel can drop at any
  // time; the anonymous peak is the memory quantizing actually needs.
  PeakMemorySampler memory(20);
  ModelOptions model_options;
  model_options.threads = o.threads;
  model_options.apply_threads();

  quantize::Recipe recipe;
  int64_t group_size = o.group_size;
  std::optional<bool> symmetric;
  NIBBLE_CHECK(!(o.asym && o.sym), "--asym and --sym contradict each other");
  if (o.asym) symmetric = false;
  if (o.sym) symmetric = true;
  recipe.scheme = o.scheme;
  recipe.act_order = o.act_order;
  recipe.static_groups = o.static_groups;
  recipe.damp_percent = o.damp_percent;
  recipe.smoothquant_alpha = o.smoothquant_alpha;
  const bool gguf_scheme = o.scheme == "Q4_0" || o.scheme == "Q8_0" || o.scheme == "Q4_K";
  const bool int_scheme = o.scheme.rfind("W", 0) == 0;
  // GGUF: with calibration data at hand (--calib or --load-calibration) the weighted search
  // is what a careful user wants for the 4-bit types; without it, nibble does not run a
  // calibration forward unasked. Q8_0 has nothing for importance to steer.
  const bool calibration_given = !o.calib.empty() || !o.load_calibration.empty();
  const bool imatrix_default = gguf_scheme && o.scheme != "Q8_0" && calibration_given;
  recipe.method = quantize::parse_method(!o.method.empty() ? o.method
                                         : int_scheme      ? "gptq"
                                         : imatrix_default ? "imatrix"
                                                           : "rtn");
  recipe.format = !o.format.empty()     ? o.format
                  : gguf_scheme         ? "gguf"
                  : o.scheme == "NVFP4" ? "modelopt"
                                        : "compressed-tensors";
  for (const auto& p : o.ignore) recipe.ignore.emplace_back(p);
  NIBBLE_CHECK(o.kv_cache_scheme.empty() || o.kv_cache_scheme == "fp8",
               "--kv-cache-scheme: unknown value '{}' (expected fp8)", o.kv_cache_scheme);
  recipe.kv_cache_scheme = o.kv_cache_scheme;  // a recipe's kv_cache_scheme overrides it
  if (!o.recipe_file.empty())
    quantize::read_recipe_file(o.recipe_file, recipe, group_size, symmetric);
  quantize::apply_scheme(recipe, group_size, symmetric);
  // KV scales go where SGLang and vLLM read them: compressed-tensors (kv_cache_scheme and
  // self_attn.k_scale/v_scale), fp8 (self_attn.k_scale/v_scale) and ModelOpt
  // (kv_cache_quant_algo FP8 and k_proj.k_scale/v_proj.v_scale). GPTQ, AWQ and GGUF consumers
  // never read KV scales: writing them there would be silently ignored.
  NIBBLE_CHECK(recipe.kv_cache_scheme.empty() || recipe.format == "compressed-tensors" ||
                   recipe.format == "fp8" || recipe.format == "modelopt",
               "--kv-cache-scheme {}: --format {} has no KV-cache scales that SGLang or vLLM "
               "read; use --format compressed-tensors, fp8 or modelopt",
               recipe.kv_cache_scheme, recipe.format);
  if (recipe.format == "gguf") {
    // GGUF blocks carry their own scales: llama.cpp's reference quantizers (rtn) or its
    // importance-weighted searches (imatrix); the file is written by the same code as
    // `nibble convert`, tokenizer metadata included.
    NIBBLE_CHECK(
        recipe.method == quantize::Method::Rtn || recipe.method == quantize::Method::Imatrix,
        "--format gguf: GGUF block types are quantized with --method rtn or imatrix, not {}",
        quantize::method_name(recipe.method));
    NIBBLE_CHECK(recipe.method != quantize::Method::Imatrix || recipe.scheme != "Q8_0",
                 "--method imatrix: Q8_0 has no scale search for the importance to steer "
                 "(llama.cpp ignores an imatrix for Q8_0 too); use --method rtn");
    NIBBLE_CHECK(recipe.scheme == "Q4_0" || recipe.scheme == "Q8_0" || recipe.scheme == "Q4_K",
                 "--format gguf: nibble quantize writes Q4_0, Q8_0 and Q4_K");
    NIBBLE_CHECK(recipe.ignore.empty(), "--format gguf: --ignore is not supported for GGUF output");
  }
  NIBBLE_CHECK(!o.out.empty(), "--out is required");
  std::error_code ec;
  if (std::filesystem::exists(o.out, ec) && !o.force)
    fail("--out {}: already exists (pass --force to replace it)", o.out);

  const ModelSource source = open_model_source(o.model_path);
  NIBBLE_CHECK(source.quantization.empty(),
               "--model-path {}: the checkpoint is already quantized ({}); quantize an "
               "unquantized (bf16/f16/f32) model",
               o.model_path, source.quantization);

  quantize::PipelineOptions po;
  po.calibration.path = o.calib;
  po.calibration.nsamples = o.nsamples;
  po.calibration.seqlen = o.seqlen;
  po.calibration.seed = o.seed;
  po.save_calibration = o.save_calibration;
  po.load_calibration = o.load_calibration;
  po.progress = !o.quiet;
  po.keep_importance = !o.save_imatrix.empty();
  NIBBLE_CHECK(o.save_imatrix.empty() || quantize::needs_calibration(recipe),
               "--save-imatrix needs calibration statistics: --method {} runs no calibration "
               "(use --method imatrix, gptq, awq, ...)",
               quantize::method_name(recipe.method));
  po.int_scale_dtype = quantize::export_scale_dtype(source, recipe);
  quantize::QuantizedModel model = quantize::run_quantization(source, recipe, po);
  if (recipe.format == "gguf") {
    // llama.cpp quantizes the embedding (and an untied output matrix) to the file type too;
    // the in-memory model sees the same rounded values.
    for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
      const CheckpointTensor* t = source.checkpoint->find(name);
      if (!t || t->shape.size() != 2 || t->shape[1] % 32 != 0) continue;
      const auto type =
          gguf::kquant_row_type(static_cast<gguf::GgmlType>(recipe.gguf_type), t->shape[1]);
      std::vector<float> values = source.checkpoint->load_f32(name);
      std::vector<uint8_t> row(gguf::row_bytes(type, t->shape[1]));
      for (int64_t r = 0; r < t->shape[0]; ++r) {
        float* v = values.data() + r * t->shape[1];
        gguf::quantize_row(type, v, row.data(), t->shape[1]);
        gguf::dequantize_row(type, row.data(), v, t->shape[1]);
      }
      model.overrides[name] = std::move(values);
    }
  }
  if (!o.save_imatrix.empty()) write_imatrix(model, o.calib, o.save_imatrix);
  const double quantize_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (recipe.format == "gguf") {
    // The decoder linears are written as the pipeline quantized them (the imatrix search
    // needs the calibration statistics; the file holds exactly the evaluated blocks).
    write_gguf_from_source(source, o.out, recipe.scheme, &model.linears);
  } else {
    quantize::export_model(source, model, recipe, o.out, o.force);
  }

  if (!o.logits_prompts.empty()) {
    NIBBLE_CHECK(!o.logits_out.empty(), "--logits-prompts needs --logits-out");
    std::ifstream in(o.logits_prompts);
    NIBBLE_CHECK(in.good(), "--logits-prompts {}: cannot open", o.logits_prompts);
    nlohmann::json prompts;
    try {
      prompts = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("--logits-prompts {}: not valid JSON: {}", o.logits_prompts, e.what());
    }
    auto m = quantize::build_in_memory_model(source, model, ComputeType::F32);
    std::filesystem::create_directories(o.logits_out);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto ids = prompts[i].get<std::vector<int32_t>>();
      write_npy_f32(std::filesystem::path(o.logits_out) / fmt::format("logits_{}.npy", i),
                    all_position_logits(*m, ids), {int64_t(ids.size()), source.config.vocab_size});
    }
  }

  if (!o.save_dequantized.empty()) {
    // Every quantized weight as nibble dequantizes it (f32): what outside decompressors must
    // reproduce.
    std::vector<std::vector<float>> values;
    std::vector<SafetensorsTensorData> tensors;
    values.reserve(model.linears.size());
    for (const auto& [module, scheme] : model.linears) {
      values.push_back(quant::dequantize(scheme.weight));
      const auto& v = values.back();
      tensors.push_back({{module + ".weight", DType::F32, {scheme.weight.rows, scheme.weight.cols}},
                         {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)}});
    }
    write_safetensors(o.save_dequantized, tensors);
  }

  const double total_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  memory.stop();
  const double peak_private_mib = double(memory.peak_anon_bytes()) / (1024.0 * 1024.0);
  if (!o.report.empty()) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& r : model.report)
      layers.push_back(
          {{"module", r.module},
           {"relative_error", std::isnan(r.relative_error) ? nlohmann::json(nullptr)
                                                           : nlohmann::json(r.relative_error)}});
    const nlohmann::json report = {{"scheme", recipe.scheme},
                                   {"method", quantize::method_name(recipe.method)},
                                   {"format", recipe.format},
                                   {"calibration_samples", model.calibration_samples},
                                   {"calibration_seqlen", model.calibration_seqlen},
                                   {"quantize_seconds", quantize_seconds},
                                   {"total_seconds", total_seconds},
                                   {"cpu_seconds", double(std::clock()) / CLOCKS_PER_SEC},
                                   {"peak_rss_mib", peak_rss_mib()},
                                   {"peak_private_mib", peak_private_mib},
                                   {"stage_seconds", model.stage_seconds},
                                   {"stage_cpu_seconds", model.stage_cpu_seconds},
                                   {"layers", layers}};
    write_file_atomic(o.report, report.dump(2) + "\n");
  }
  if (!o.quiet) {
    std::fprintf(stderr,
                 "quantize: wrote %s (%zu quantized linears) in %.1f s (CPU %.1f s), peak RSS "
                 "%.0f MiB (private %.0f MiB)\n",
                 o.out.c_str(), model.linears.size(), total_seconds,
                 double(std::clock()) / CLOCKS_PER_SEC, peak_rss_mib(), peak_private_mib);
    for (const auto& [stage, sec] : model.stage_seconds) {
      const auto cpu = model.stage_cpu_seconds.find(stage);
      std::fprintf(stderr, "quantize:   %s %.1f s (CPU %.1f s)\n", stage.c_str(), sec,
                   cpu == model.stage_cpu_seconds.end() ? 0.0 : cpu->second);
    }
  }
  return 0;
}

NIBBLE_COMMAND(quantize, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<QuantizeOptions>();
  app.description(
      "Quantize an unquantized HF model offline with calibration (rtn, gptq, awq, smoothquant) "
      "and export it (compressed-tensors, gptq, awq, fp8, modelopt; gguf Q4_0/Q8_0/Q4_K)");
  app.add_option("--model-path,-m", o->model_path, "HF model directory (bf16/f16/f32) or GGUF")
      ->required();
  app.add_option(
         "--scheme", o->scheme,
         "W4A16, W4A16_ASYM, W8A16, W8A8, FP8_DYNAMIC, FP8, FP8_BLOCK, NVFP4, Q4_0, Q8_0, Q4_K")
      ->capture_default_str();
  app.add_option("--method", o->method,
                 "rtn, gptq, awq, smoothquant, smoothquant+gptq, or imatrix for GGUF (default: "
                 "gptq for integer schemes; imatrix for Q4_0/Q4_K given --calib or "
                 "--load-calibration; rtn otherwise)");
  app.add_option("--format", o->format,
                 "compressed-tensors (default), gptq, awq, fp8, modelopt (NVFP4), or gguf (--out "
                 "FILE.gguf)");
  app.add_option("--group-size", o->group_size,
                 "integer group size along K: -1 (per channel), 32, 64, 128 (default: the "
                 "scheme's)");
  app.add_flag("--asym", o->asym, "asymmetric integer weights (zero points)");
  app.add_flag("--sym", o->sym, "symmetric integer weights");
  app.add_flag("--act-order", o->act_order,
               "GPTQ desc_act: columns by descending Hessian diagonal");
  app.add_flag("--static-groups", o->static_groups,
               "GPTQ: group parameters fixed before act-order");
  app.add_option("--damp-percent", o->damp_percent, "GPTQ dampening of the Hessian diagonal")
      ->capture_default_str();
  app.add_option("--smoothquant-alpha", o->smoothquant_alpha, "SmoothQuant migration strength")
      ->capture_default_str();
  app.add_option("--calib", o->calib,
                 "calibration file: .jsonl (passage/text/query/messages), .json (token ids) or "
                 "text (default: ../shared/data/text/boolq.jsonl)");
  app.add_option("--nsamples", o->nsamples, "calibration samples")->capture_default_str();
  app.add_option("--seqlen", o->seqlen, "tokens per calibration sample")->capture_default_str();
  app.add_option("--seed", o->seed, "calibration document shuffle seed")->capture_default_str();
  app.add_option("--ignore", o->ignore,
                 "modules left unquantized: a path, a trailing part (mlp.down_proj) or re:REGEX "
                 "(lm_head is never quantized)");
  app.add_option("--kv-cache-scheme", o->kv_cache_scheme,
                 "fp8: calibrate per-layer K/V scales (amax / 448) for an fp8 e4m3 KV cache and "
                 "export them (self_attn.k_scale/v_scale, kv_cache_scheme)");
  app.add_option("--out,-o", o->out, "output directory")->required();
  app.add_option(
      "--recipe", o->recipe_file,
      "JSON recipe, or an LLM Compressor YAML recipe (.yaml/.yml); keys override the flags");
  app.add_option("--save-calibration", o->save_calibration,
                 "directory to save the calibration statistics in");
  app.add_option("--save-imatrix", o->save_imatrix,
                 "GGUF file: the calibration inputs' Σx² per column of every linear, as "
                 "llama.cpp's imatrix (llama-quantize --imatrix reads it)");
  app.add_option("--load-calibration", o->load_calibration,
                 "quantize from saved statistics instead of running the model");
  app.add_option("--logits-prompts", o->logits_prompts,
                 "JSON token-id prompts: write the in-memory quantized model's logits");
  app.add_option("--logits-out", o->logits_out, "directory for logits_<i>.npy");
  app.add_option("--save-dequantized", o->save_dequantized,
                 "safetensors file: every quantized weight dequantized to f32 (for checks)");
  app.add_option("--report", o->report, "JSON file: per-layer errors, time, peak RSS");
  app.add_option("--threads,-t", o->threads, "CPU threads (0: all cores)");
  app.add_flag("--force", o->force, "replace an existing output");
  app.add_flag("--quiet,-q", o->quiet, "no progress on stderr");
  return [o] { return run_quantize(*o); };
});

}  // namespace
}  // namespace nibble::cli
