#pragma once
// SGLang's ModelOpt quantize-and-serve: `--quantization modelopt_fp8|modelopt_fp4` on an
// unquantized (bf16/f16/f32) HF checkpoint calibrates, quantizes and then runs the model, with
// sglang.launch_server's flags:
//   --modelopt-export-path DIR             also write the ModelOpt checkpoint there;
//   --modelopt-checkpoint-save-path DIR    save the calibration statistics;
//   --modelopt-checkpoint-restore-path DIR reuse them, so a restart skips the calibration forward.
// nibble runs its offline pipeline (quantize/pipeline.h) with the recipe of ModelOpt's
// FP8_DEFAULT_CFG / NVFP4_DEFAULT_CFG and builds the model straight from the in-memory result
// (quantize/in_memory_model.h): nothing goes through disk unless an export is asked for. The
// export loads back to the same logits, as every `nibble quantize` export does.
//
// SGLang saves ModelOpt's fake-quant state as one file; nibble's save path is a directory in the
// --save-calibration layout (quantize/calibration_store.h) plus modelopt_calibration.json, which
// records the method and the model it was calibrated on so that a restore can refuse a mismatch.
#include <filesystem>
#include <string>

#include "quantize/calibration_data.h"
#include "quantize/recipe.h"

namespace nibble {
struct ModelSource;
}

namespace nibble::quantize {

struct ModelOptServeOptions {
  std::filesystem::path export_path;
  std::filesystem::path checkpoint_save_path;
  std::filesystem::path checkpoint_restore_path;
  bool progress = true;  // what happens (calibrated or restored, exported) and per-layer progress
};

// SGLang hard-codes its calibration set (cnn_dailymail, 512 samples) and has no flag for it;
// nibble fixes the BoolQ passages of the shared data (the `nibble quantize` default), 32 samples
// of 512 tokens, seed 0 — `nibble quantize --nsamples 32 --seqlen 512` reproduces it.
CalibrationOptions modelopt_serve_calibration();

// The offline recipe of a calibrated method, round-to-nearest, --format modelopt:
// modelopt_fp8 → FP8 (per-tensor e4m3 weights, static per-tensor input scales amax / 448),
// modelopt_fp4 → NVFP4. Error for any other name.
Recipe modelopt_serve_recipe(const std::string& method);

// SGLang's other spellings folded into the --quantization value they mean: --modelopt-quant
// fp8 | nvfp4 (its ModelOpt loader's names for modelopt_fp8 / modelopt_fp4) and the
// --quantize-and-serve switch (SGLang requires a ModelOpt method with it; nibble always serves
// what it quantized, so the switch only checks that). Errors name the flag: int4_awq, w4a8_awq
// and nvfp4_awq (TODO in SGLang too), any other value, a --modelopt-quant that contradicts
// --quantization, --quantize-and-serve without a ModelOpt method.
std::string modelopt_quantization(const std::string& quantization,
                                  const std::string& modelopt_quant, bool quantize_and_serve);

// The file in a --modelopt-checkpoint-save-path directory that says what it was saved from.
inline constexpr const char* kModelOptCalibrationManifest = "modelopt_calibration.json";

// When source.calibrated_quantization: calibrates (or restores the statistics), quantizes, saves
// and exports as asked, and sets source.model_builder so that build_model() returns the quantized
// model. Otherwise any path in `options` is an error naming the flag. A restore directory saved
// for another method or another model is an error naming the directory.
void prepare_quantize_and_serve(ModelSource& source, const ModelOptServeOptions& options);

}  // namespace nibble::quantize
