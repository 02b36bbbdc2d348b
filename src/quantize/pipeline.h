#pragma once
// The offline quantization pipeline (true-sequential, layer by layer): embed the calibration
// tokens, then for each decoder layer load only that layer's dense weights, run it in f32 on
// all samples while collecting each linear group's input statistics, quantize the group, and
// run the next group on the quantized outputs; the quantized layer's output feeds the next
// layer, and the layer's dense weights are dropped.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "quant/scheme.h"
#include "quantize/calibration_data.h"
#include "quantize/recipe.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

struct LinearReport {
  std::string module;
  // ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on kept calibration rows (NaN without calibration).
  double relative_error = 0.0;
};

struct QuantizedModel {
  std::map<std::string, quant::LinearScheme> linears;  // by module path
  // Dense tensors the method changed (SmoothQuant/AWQ fold their scales into the RMSNorm
  // weights), as the values the export stores (already rounded to its dtype).
  std::map<std::string, std::vector<float>> overrides;
  std::vector<LinearReport> report;
  // --kv-cache-scheme fp8: per layer (k_scale, v_scale) = amax / 448 of K (after RoPE, as the
  // cache stores it) and V over all calibration tokens, seen through the quantized k/v_proj.
  std::vector<std::pair<float, float>> kv_scales;
  // PipelineOptions::keep_importance: per linear (module path), the mean x² of its calibration
  // inputs per input column and the number of tokens (llama.cpp's imatrix in_sum2 / counts).
  std::map<std::string, std::pair<std::vector<float>, int64_t>> importance;
  int64_t calibration_samples = 0, calibration_seqlen = 0;
  // Wall time per stage: forward (the layer runner), statistics (Hessians, |x|), scale_search
  // (SmoothQuant/AWQ), quantize (RTN/GPTQ/clipping), error_log.
  std::map<std::string, double> stage_seconds;
  // CPU time of the whole process (all threads) per stage.
  std::map<std::string, double> stage_cpu_seconds;
};

struct PipelineOptions {
  CalibrationOptions calibration;
  std::filesystem::path save_calibration;  // directory: layer_<i>.safetensors
  std::filesystem::path load_calibration;
  bool keep_importance = false;  // fill QuantizedModel::importance (--save-imatrix)
  bool progress = true;          // layer i of n, time left, per-layer errors on stderr
  // Per-linear output errors (report, progress line) from kept calibration rows. Off, no rows
  // are kept unless the method searches on them (AWQ): saved statistics shrink to a few vectors
  // per layer and a restore costs no error computation (quantize-and-serve).
  bool error_log = true;
  // Dtype the export stores integer scales in (scales are rounded to it before rounding codes).
  quant::ScaleDType int_scale_dtype = quant::ScaleDType::BF16;
};

// Whether the recipe needs calibration data at all (RTN weight-only schemes without KV-cache
// scales do not).
bool needs_calibration(const Recipe& recipe);

QuantizedModel run_quantization(const ModelSource& source, const Recipe& recipe,
                                const PipelineOptions& options);

// Module paths of the decoder linears of `layer`, in quantization order.
std::string linear_module(int64_t layer, const char* suffix);

}  // namespace nibble::quantize
