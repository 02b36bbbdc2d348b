#include "quantize/quantize_and_serve.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/atomic_output.h"
#include "core/error.h"
#include "formats/hf/hf_config.h"
#include "model/loader.h"
#include "quantize/export_formats.h"
#include "quantize/in_memory_model.h"
#include "quantize/pipeline.h"

namespace nibble::quantize {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The shape of the model the statistics belong to: the per-layer files only check the
// dimensions of one layer, not the number of layers or the vocabulary.
json model_identity(const ModelConfig& c) {
  return {{"model_type", c.model_type},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim}};
}

// FNV-1a over the first layer's q_proj weight: two checkpoints of one architecture (a fine-tune
// and its base) have the same shapes but not the same statistics.
std::string weights_fingerprint(const ModelSource& source) {
  const char* name = "model.layers.0.self_attn.q_proj.weight";
  NIBBLE_CHECK(source.checkpoint->find(name) != nullptr,
               "quantize-and-serve: {} has no {} (model_type {}; ModelOpt quantize-and-serve runs "
               "llama, mistral, qwen2 and qwen3)",
               source.path.string(), name, source.config.model_type);
  const std::vector<float> w = source.checkpoint->load_f32(name);
  uint64_t h = 0xcbf29ce484222325ull;
  for (float v : w) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < 4; ++i) {
      h ^= (bits >> (8 * i)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  }
  return fmt::format("{:016x}", h);
}

void check_restorable(const fs::path& dir, const ModelSource& source, const std::string& method,
                      const std::string& fingerprint) {
  std::error_code ec;
  NIBBLE_CHECK(fs::is_directory(dir, ec),
               "--modelopt-checkpoint-restore-path {}: no such directory (save one with "
               "--modelopt-checkpoint-save-path)",
               dir.string());
  const fs::path manifest_path = dir / kModelOptCalibrationManifest;
  NIBBLE_CHECK(fs::exists(manifest_path, ec),
               "--modelopt-checkpoint-restore-path {}: not saved by "
               "--modelopt-checkpoint-save-path (no {})",
               dir.string(), kModelOptCalibrationManifest);
  const json manifest = read_json_file(manifest_path);
  const std::string where = manifest_path.string();
  NIBBLE_CHECK(manifest.is_object() && manifest.value("method", json()).is_string() &&
                   manifest.value("model", json()).is_object(),
               "{}: not a ModelOpt calibration manifest (needs \"method\" and \"model\")", where);
  const std::string saved_method = manifest["method"].get<std::string>();
  // The pipeline is true-sequential: a layer's statistics were taken on the outputs of the
  // layers quantized before it by the saved run's scheme, so they belong to that scheme only.
  NIBBLE_CHECK(saved_method == method,
               "--modelopt-checkpoint-restore-path {}: calibrated for {}, not {}; calibrate "
               "again for {}",
               dir.string(), saved_method, method, method);
  const json want = model_identity(source.config);
  const json& have = manifest["model"];
  for (const auto& [key, value] : want.items()) {
    NIBBLE_CHECK(have.contains(key) && have[key] == value,
                 "--modelopt-checkpoint-restore-path {}: calibrated on a model with {} = {}, but "
                 "{} has {}",
                 dir.string(), key, have.contains(key) ? have[key].dump() : "(missing)",
                 source.path.string(), value.dump());
  }
  NIBBLE_CHECK(manifest.value("weights_fingerprint", std::string()) == fingerprint,
               "--modelopt-checkpoint-restore-path {}: calibrated on other weights than {} "
               "(same architecture, different checkpoint)",
               dir.string(), source.path.string());
}

// An export directory is replaced only when it holds a ModelOpt export already (a restart with
// the same flags); anything else, the model being served above all, is left alone.
void check_export_path(const fs::path& out, const ModelSource& source) {
  std::error_code ec;
  NIBBLE_CHECK(!fs::equivalent(out, source.path, ec),
               "--modelopt-export-path {}: that is the model being quantized; export elsewhere",
               out.string());
  if (!fs::exists(out, ec)) return;
  NIBBLE_CHECK(fs::is_directory(out, ec) &&
                   (fs::is_empty(out, ec) || fs::exists(out / "hf_quant_config.json", ec)),
               "--modelopt-export-path {}: exists and is not a ModelOpt export; refusing to "
               "replace it",
               out.string());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

CalibrationOptions modelopt_serve_calibration() {
  CalibrationOptions c;
  c.nsamples = 32;
  c.seqlen = 512;
  c.seed = 0;
  return c;
}

Recipe modelopt_serve_recipe(const std::string& method) {
  Recipe r;
  NIBBLE_CHECK(method == "modelopt_fp8" || method == "modelopt_fp4",
               "quantize-and-serve: unknown method '{}' (expected modelopt_fp8 or modelopt_fp4)",
               method);
  r.scheme = method == "modelopt_fp8" ? "FP8" : "NVFP4";
  r.method = Method::Rtn;
  r.format = "modelopt";
  apply_scheme(r, 0, std::nullopt);
  return r;
}

std::string modelopt_quantization(const std::string& quantization,
                                  const std::string& modelopt_quant, bool quantize_and_serve) {
  std::string method = quantization;
  if (!modelopt_quant.empty()) {
    std::string mapped;
    if (modelopt_quant == "fp8") mapped = "modelopt_fp8";
    if (modelopt_quant == "nvfp4") mapped = "modelopt_fp4";
    const bool awq = modelopt_quant == "int4_awq" || modelopt_quant == "w4a8_awq" ||
                     modelopt_quant == "nvfp4_awq";
    NIBBLE_CHECK(!awq,
                 "--modelopt-quant {}: ModelOpt's AWQ variants are not implemented (SGLang lists "
                 "them as TODO too); use fp8 or nvfp4",
                 modelopt_quant);
    NIBBLE_CHECK(!mapped.empty(), "--modelopt-quant: unknown value '{}' (expected fp8 or nvfp4)",
                 modelopt_quant);
    NIBBLE_CHECK(quantization.empty() || quantization == "modelopt" || quantization == mapped,
                 "--modelopt-quant {} means --quantization {}, which contradicts --quantization {}",
                 modelopt_quant, mapped, quantization);
    method = mapped;
  }
  NIBBLE_CHECK(
      !quantize_and_serve || method == "modelopt" || method == "modelopt_fp8" ||
          method == "modelopt_fp4",
      "--quantize-and-serve requires ModelOpt quantization (set with --quantization modelopt, "
      "modelopt_fp4 or modelopt_fp8){}",
      method.empty() ? "" : fmt::format("; --quantization is {}", method));
  return method;
}

void prepare_quantize_and_serve(ModelSource& source, const ModelOptServeOptions& o) {
  if (!source.calibrated_quantization) {
    const auto refuse = [&](const fs::path& p, const char* flag) {
      NIBBLE_CHECK(p.empty(),
                   "{} {}: needs --quantization modelopt_fp8 or modelopt_fp4 on an unquantized "
                   "checkpoint (ModelOpt quantize-and-serve); {} is {}",
                   flag, p.string(), source.path.string(),
                   source.quantization.empty() ? "served unquantized"
                                               : "quantized with " + source.quantization);
    };
    refuse(o.export_path, "--modelopt-export-path");
    refuse(o.checkpoint_save_path, "--modelopt-checkpoint-save-path");
    refuse(o.checkpoint_restore_path, "--modelopt-checkpoint-restore-path");
    return;
  }
  if (source.model_builder) return;  // already prepared (an Engine given a prepared source)
  NIBBLE_CHECK(o.checkpoint_save_path.empty() || o.checkpoint_restore_path.empty(),
               "--modelopt-checkpoint-save-path and --modelopt-checkpoint-restore-path: give one "
               "(a restored calibration is already saved)");
  const std::string& method = source.quantization;
  const Recipe recipe = modelopt_serve_recipe(method);
  if (!o.export_path.empty()) check_export_path(o.export_path, source);
  const std::string fingerprint = weights_fingerprint(source);
  const bool restoring = !o.checkpoint_restore_path.empty();
  if (restoring) check_restorable(o.checkpoint_restore_path, source, method, fingerprint);

  PipelineOptions po;
  po.calibration = modelopt_serve_calibration();
  po.progress = o.progress;
  // Serving needs no per-layer error report; without it no input rows are kept, so the saved
  // statistics are a few vectors per layer and a restore is quick.
  po.error_log = false;
  po.int_scale_dtype = export_scale_dtype(source, recipe);
  po.load_calibration = o.checkpoint_restore_path;
  // The statistics land in a partial directory renamed into place only when complete, so a
  // restore never finds half of them.
  std::optional<AtomicOutputDirectory> save_dir;
  if (!o.checkpoint_save_path.empty()) {
    save_dir.emplace(o.checkpoint_save_path, /*replace=*/true);
    po.save_calibration = save_dir->path();
  }
  if (o.progress) {
    if (restoring) {
      std::fprintf(stderr,
                   "quantize-and-serve: %s: calibration restored from %s (no calibration "
                   "forward)\n",
                   method.c_str(), o.checkpoint_restore_path.c_str());
    } else {
      const fs::path calib =
          po.calibration.path.empty() ? default_calibration_path() : po.calibration.path;
      std::fprintf(stderr, "quantize-and-serve: %s: calibrating on %lld x %lld tokens of %s\n",
                   method.c_str(), static_cast<long long>(po.calibration.nsamples),
                   static_cast<long long>(po.calibration.seqlen), calib.c_str());
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto model = std::make_shared<QuantizedModel>(run_quantization(source, recipe, po));
  const double quantize_seconds = seconds_since(t0);

  if (save_dir) {
    const json manifest = {{"producer", "nibble"},
                           {"method", method},
                           {"scheme", recipe.scheme},
                           {"model", model_identity(source.config)},
                           {"weights_fingerprint", fingerprint},
                           {"calibration",
                            {{"samples", model->calibration_samples},
                             {"seqlen", model->calibration_seqlen},
                             {"seed", po.calibration.seed}}}};
    write_file_atomic(save_dir->path() / kModelOptCalibrationManifest, manifest.dump(2) + "\n");
    save_dir->commit();
    if (o.progress)
      std::fprintf(stderr, "quantize-and-serve: calibration saved to %s\n",
                   o.checkpoint_save_path.c_str());
  }
  if (!o.export_path.empty()) {
    export_model(source, *model, recipe, o.export_path, /*force=*/true);
    if (o.progress)
      std::fprintf(stderr, "quantize-and-serve: ModelOpt %s checkpoint exported to %s\n",
                   recipe.scheme.c_str(), o.export_path.c_str());
  }
  if (o.progress) {
    // Where the time went: the calibration forward, or (restored) the error log alone.
    std::vector<std::string> stages;
    for (const auto& [stage, sec] : model->stage_seconds)
      if (sec >= 0.05) stages.push_back(fmt::format("{} {:.1f} s", stage, sec));
    std::fprintf(stderr, "quantize-and-serve: %s: %zu linears quantized in %.1f s (%s)\n",
                 method.c_str(), model->linears.size(), quantize_seconds,
                 fmt::format("{}", fmt::join(stages, ", ")).c_str());
  }
  source.model_builder = [model](const ModelSource& s, ComputeType compute) {
    return build_in_memory_model(s, *model, compute);
  };
}

}  // namespace nibble::quantize
