// ModelOpt quantize-and-serve: how --quantization modelopt_* resolves on each kind of checkpoint,
// the recipe each method maps to, and the refusals that need no model files.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "core/error.h"
#include "model/loader.h"
#include "quant/resolve.h"
#include "quantize/pipeline.h"
#include "quantize/quantize_and_serve.h"
#include "quantize/recipe.h"

namespace nibble::quantize {
namespace {

template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    FAIL() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

quant::QuantConfig detected(const std::string& method) {
  quant::QuantConfig q;
  q.method = q.checkpoint_method = method;
  q.source = "config.json";
  return q;
}

TEST(QuantizeAndServe, ModelOptMethodsOnAnUnquantizedCheckpointCalibrate) {
  EXPECT_TRUE(quant::is_calibrated_method("modelopt_fp8"));
  EXPECT_TRUE(quant::is_calibrated_method("ModelOpt_FP4"));
  EXPECT_FALSE(quant::is_calibrated_method("modelopt"));
  EXPECT_FALSE(quant::is_calibrated_method("fp8"));
  // No checkpoint config to load: the caller calibrates (nullopt, as for online methods).
  EXPECT_FALSE(quant::apply_user_quantization(std::nullopt, "modelopt_fp8").has_value());
  EXPECT_FALSE(quant::apply_user_quantization(std::nullopt, "modelopt_fp4").has_value());
  expect_error([] { quant::apply_user_quantization(std::nullopt, "modelopt"); },
               "name the scheme: modelopt_fp8 or modelopt_fp4");
  expect_error([] { quant::apply_user_quantization(std::nullopt, "modelopt_mixed"); },
               "not an online method");
}

TEST(QuantizeAndServe, PreQuantizedCheckpointsKeepSglangRules) {
  EXPECT_EQ(quant::apply_user_quantization(detected("modelopt_fp8"), "modelopt_fp8")->method,
            "modelopt_fp8");
  EXPECT_EQ(quant::apply_user_quantization(detected("modelopt_fp4"), "modelopt")->method,
            "modelopt_fp4");
  expect_error([] { quant::apply_user_quantization(detected("modelopt_fp4"), "modelopt_fp8"); },
               "does not match");
  expect_error([] { quant::apply_user_quantization(detected("gptq"), "modelopt_fp8"); },
               "does not match");
}

TEST(QuantizeAndServe, RecipesAreModelOptDefaults) {
  const Recipe fp8 = modelopt_serve_recipe("modelopt_fp8");
  EXPECT_EQ(fp8.scheme, "FP8");
  EXPECT_EQ(fp8.format, "modelopt");
  EXPECT_EQ(fp8.method, Method::Rtn);
  EXPECT_EQ(fp8.kind, WeightKind::Fp8);
  EXPECT_TRUE(fp8.fp8_per_tensor);
  EXPECT_EQ(fp8.act, quant::ActQuantKind::StaticPerTensorFp8);
  EXPECT_TRUE(needs_calibration(fp8));
  const Recipe fp4 = modelopt_serve_recipe("modelopt_fp4");
  EXPECT_EQ(fp4.scheme, "NVFP4");
  EXPECT_EQ(fp4.kind, WeightKind::Nvfp4);
  EXPECT_EQ(fp4.act, quant::ActQuantKind::Nvfp4);
  EXPECT_TRUE(needs_calibration(fp4));
  expect_error([] { modelopt_serve_recipe("fp8"); }, "unknown method 'fp8'");

  const CalibrationOptions c = modelopt_serve_calibration();
  EXPECT_TRUE(c.path.empty());  // the BoolQ default
  EXPECT_EQ(c.nsamples, 32);
  EXPECT_EQ(c.seqlen, 512);
}

TEST(QuantizeAndServe, ModelOptFormatHoldsFp8AndNvfp4Only) {
  for (const char* scheme : {"W4A16", "FP8_DYNAMIC", "FP8_BLOCK"}) {
    Recipe r;
    r.scheme = scheme;
    r.method = Method::Rtn;
    r.format = "modelopt";
    expect_error([&] { apply_scheme(r, 0, std::nullopt); }, "--format modelopt holds");
  }
  Recipe nvfp4;
  nvfp4.scheme = "NVFP4";
  nvfp4.method = Method::Rtn;
  nvfp4.format = "compressed-tensors";
  expect_error([&] { apply_scheme(nvfp4, 0, std::nullopt); }, "written as --format modelopt");
}

TEST(QuantizeAndServe, SglangSpellingsFoldIntoQuantization) {
  EXPECT_EQ(modelopt_quantization("", "", false), "");
  EXPECT_EQ(modelopt_quantization("fp8", "", false), "fp8");
  EXPECT_EQ(modelopt_quantization("", "fp8", false), "modelopt_fp8");
  EXPECT_EQ(modelopt_quantization("", "nvfp4", true), "modelopt_fp4");
  EXPECT_EQ(modelopt_quantization("modelopt", "nvfp4", false), "modelopt_fp4");
  EXPECT_EQ(modelopt_quantization("modelopt_fp8", "fp8", true), "modelopt_fp8");
  EXPECT_EQ(modelopt_quantization("modelopt", "", true), "modelopt");
  expect_error([] { modelopt_quantization("modelopt_fp4", "fp8", false); },
               "contradicts --quantization modelopt_fp4");
  expect_error([] { modelopt_quantization("", "int4_awq", false); }, "AWQ variants");
  expect_error([] { modelopt_quantization("", "fp4", false); }, "unknown value 'fp4'");
  expect_error([] { modelopt_quantization("", "", true); },
               "--quantize-and-serve requires ModelOpt quantization");
  expect_error([] { modelopt_quantization("fp8", "", true); }, "--quantization is fp8");
}

TEST(QuantizeAndServe, PathsWithoutModelOptQuantizationAreRefused) {
  ModelSource source;
  source.path = "some/model";
  prepare_quantize_and_serve(source, {});  // nothing asked: nothing done
  EXPECT_FALSE(source.model_builder);
  ModelOptServeOptions o;
  o.export_path = "out";
  expect_error([&] { prepare_quantize_and_serve(source, o); },
               "--modelopt-export-path out: needs --quantization modelopt_fp8 or modelopt_fp4");
  source.quantization = "gptq";
  o.export_path.clear();
  o.checkpoint_restore_path = "calib";
  expect_error([&] { prepare_quantize_and_serve(source, o); }, "quantized with gptq");
}

TEST(QuantizeAndServe, BuildModelRefusesAnUnpreparedCalibratedSource) {
  ModelSource source;
  source.path = "some/model";
  source.quantization = "modelopt_fp8";
  source.calibrated_quantization = true;
  expect_error([&] { build_model(source, ComputeType::F32); }, "prepare_quantize_and_serve");
}

}  // namespace
}  // namespace nibble::quantize
