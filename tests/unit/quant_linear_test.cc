// make_quantized_linear end to end: the packed kernels (and the dense fallback) against
// quant::dequantize + a double-precision matmul, on fresh random weights and activations, for
// every ISA this CPU runs. Two checks per case:
//  - against the scheme's own quantized activations x' (fake_quantize_activations): only f32
//    accumulation error, (K + 16) u sum |w| |x'| with |w| bounded by 4x the row's max;
//  - against the unquantized x: plus sum |w_k| e_k, e_k the bound of x_k's activation rounding
//    (s/2 for int8, 2^-4 |x| + 2^-10 s for e4m3, a quarter of the 16-block max for NVFP4).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/linear_weight.h"
#include "backend/cpu/quant/activation_quant.h"
#include "backend/cpu/quant/quant_linear_options.h"
#include "core/numeric.h"
#include "formats/gguf/gguf_dequant.h"
#include "formats/memory_checkpoint.h"
#include "model/linear_builder.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/reference/quantize.h"
#include "quant/types.h"

namespace nibble::cpu {
namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);

std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}());
  return gen;
}
float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng()); }
std::vector<float> random_vector(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = uniform(lo, hi);
  return v;
}

// Per-element bound of the activation rounding of `act` on row `x` of length k.
std::vector<double> act_error(const quant::ActQuant& act, const float* x, int64_t k) {
  std::vector<double> e(size_t(k), 0.0);
  auto amax = [](const float* p, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, double(std::fabs(p[i])));
    return m;
  };
  using quant::ActQuantKind;
  switch (act.kind) {
    case ActQuantKind::None: break;
    case ActQuantKind::DynamicPerTokenInt8:
      std::fill(e.begin(), e.end(), amax(x, k) / 127.0 / 2.0 * 1.0001);
      break;
    case ActQuantKind::StaticPerTensorInt8:
      std::fill(e.begin(), e.end(), double(*act.input_scale) / 2.0 * 1.0001);
      break;
    case ActQuantKind::DynamicPerTokenFp8:
    case ActQuantKind::DynamicPerTokenGroupFp8:
    case ActQuantKind::StaticPerTensorFp8: {
      const int64_t g = act.kind == ActQuantKind::DynamicPerTokenGroupFp8 ? act.group_size : k;
      for (int64_t b = 0; b < k; b += g) {
        const int64_t len = std::min(g, k - b);
        const double s = act.kind == ActQuantKind::StaticPerTensorFp8 ? *act.input_scale
                                                                      : amax(x + b, len) / 448.0;
        for (int64_t i = b; i < b + len; ++i)
          e[size_t(i)] = std::fabs(x[i]) / 16.0 + s / 1024.0 + 1e-12;
      }
      break;
    }
    case ActQuantKind::Nvfp4:
      for (int64_t b = 0; b < k; b += 16) {
        const int64_t len = std::min<int64_t>(16, k - b);
        const double m = amax(x + b, len);
        for (int64_t i = b; i < b + len; ++i) e[size_t(i)] = m / 4.0 + 1e-12;
      }
      break;
  }
  return e;
}

// x rounded to int8 with one scale (max| | / 127) per `group` columns of each row, and back: what
// weight-only layers opted into the a8 kernels compute with.
void fake_int8_per_group(const float* x, int64_t m, int64_t k, int64_t group, float* out) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < k; b += group) {
      const int64_t len = std::min(group, k - b);
      float amax = 0.0f;
      for (int64_t i = b; i < b + len; ++i) amax = std::max(amax, std::fabs(x[r * k + i]));
      const float s = amax / 127.0f;
      for (int64_t i = b; i < b + len; ++i)
        out[r * k + i] = s == 0.0f ? 0.0f : std::nearbyint(x[r * k + i] / s) * s;
    }
  }
}

std::vector<double> int8_per_group_error(const float* x, int64_t k, int64_t group) {
  std::vector<double> e(static_cast<size_t>(k));
  for (int64_t b = 0; b < k; b += group) {
    const int64_t len = std::min(group, k - b);
    double amax = 0.0;
    for (int64_t i = b; i < b + len; ++i) amax = std::max(amax, double(std::fabs(x[i])));
    for (int64_t i = b; i < b + len; ++i) e[size_t(i)] = amax / 127.0 / 2.0 * 1.0001;
  }
  return e;
}

void check_linear(const quant::QuantizedTensor& w, const quant::ActQuant& scheme_act,
                  const std::string& what, const QuantLinearOptions& options = {},
                  const std::string& expect_in_description = "") {
  const std::vector<float> dense = quant::dequantize(w);
  const int64_t n = w.rows, k = w.cols;
  auto layer = make_quantized_linear(w, scheme_act, WeightType::F32, options);
  // A weight-only layer that opted into int8 activations (and got the kernel) rounds x like
  // DynamicPerTokenInt8, but over each weight group (32 for GGUF blocks) instead of the row.
  const quant::ActQuant& act = scheme_act;
  int64_t x_group = 0;
  if (act.kind == quant::ActQuantKind::None && options.int8_activations_for_weight_only &&
      layer->describe().find("a8") != std::string::npos) {
    ASSERT_NE(layer->describe().find("x int8/group"), std::string::npos) << layer->describe();
    ASSERT_TRUE(w.g_idx.empty()) << "the per-group reference below has no act-order";
    x_group = w.elem == quant::ElemType::GgufBlock ? 32
              : w.scale_block_cols >= k            ? k
                                                   : w.scale_block_cols;
  }
  ASSERT_EQ(layer->rows(), n);
  ASSERT_EQ(layer->cols(), k);
  const std::string description = layer->describe();
  if (!expect_in_description.empty()) {
    EXPECT_NE(description.find(expect_in_description), std::string::npos)
        << what << ": " << description;
  }
  // weight_row gives the weight forward multiplies by: the reference dequantization up to the
  // rounding of one f32 product and sum (d·q + mn with mn = -d·z rounded: a few units in the
  // last place of the row's largest weight near zero-valued ones), for every layout that keeps
  // K in order (act-order rows are not in K order and give none).
  {
    std::vector<float> row(static_cast<size_t>(k));
    double worst = 0.0;
    int64_t rows_given = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (!layer->weight_row(r, row.data())) break;
      ++rows_given;
      double largest = 0.0;
      for (int64_t c = 0; c < k; ++c)
        largest = std::max(largest, double(std::fabs(dense[size_t(r * k + c)])));
      for (int64_t c = 0; c < k; ++c) {
        const double want = dense[size_t(r * k + c)];
        worst = std::max(worst, std::fabs(row[size_t(c)] - want) /
                                    (4.0 * kUnitRoundoff * (std::fabs(want) + largest) + 1e-30));
      }
    }
    EXPECT_EQ(rows_given, w.g_idx.empty() ? n : 0) << what << " [" << layer->describe() << "]";
    EXPECT_LE(worst, 1.0) << what << " [" << layer->describe() << "]: weight_row";
  }
  std::vector<double> row_max(size_t(n), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      row_max[size_t(r)] =
          std::max(row_max[size_t(r)], double(std::fabs(dense[size_t(r * k + c)])));
  for (int64_t m : {1, 3, 8}) {
    const std::vector<float> x = random_vector(size_t(m * k), -2.0f, 2.0f);
    const std::vector<float> bias = random_vector(size_t(n));
    std::vector<float> x_fake(x.size());
    if (x_group > 0) {
      fake_int8_per_group(x.data(), m, k, x_group, x_fake.data());
    } else {
      fake_quantize_activations(act, x.data(), m, k, x_fake.data());
    }
    std::vector<float> y(size_t(m * n), -9.0f);
    layer->forward(x.data(), m, bias.data(), y.data());
    for (int64_t r = 0; r < m; ++r) {
      const std::vector<double> e = x_group > 0 ? int8_per_group_error(x.data() + r * k, k, x_group)
                                                : act_error(act, x.data() + r * k, k);
      for (int64_t c = 0; c < n; ++c) {
        double ref_fake = bias[size_t(c)], ref_exact = bias[size_t(c)];
        double mag = std::fabs(bias[size_t(c)]), act_bound = 0.0;
        for (int64_t i = 0; i < k; ++i) {
          const double wi = dense[size_t(c * k + i)];
          ref_fake += wi * x_fake[size_t(r * k + i)];
          ref_exact += wi * x[size_t(r * k + i)];
          mag += 4.0 * row_max[size_t(c)] * std::fabs(x_fake[size_t(r * k + i)]);
          act_bound += std::fabs(wi) * e[size_t(i)];
        }
        const double f32_bound = double(k + 16) * kUnitRoundoff * mag + 1e-30;
        const float got = y[size_t(r * n + c)];
        ASSERT_NEAR(got, ref_fake, f32_bound)
            << what << " [" << description << "] m=" << m << " (" << r << ", " << c << ")";
        ASSERT_NEAR(got, ref_exact, f32_bound + act_bound)
            << what << " [" << description << "] vs unquantized x, m=" << m;
      }
    }
  }
}

// Runs `body` once per ISA this CPU has (scalar included), with NIBBLE_CPU_ISA unchanged: the
// dispatch picks the table once per process, so the per-ISA runs go through kernels_for_isa.
std::vector<std::string> isas() { return available_isas(); }

quant::QuantizedTensor random_codes(quant::ElemType elem, int64_t rows, int64_t cols,
                                    int64_t block_cols, quant::ScaleDType dtype) {
  quant::QuantizedTensor t;
  t.elem = elem;
  t.rows = rows;
  t.cols = cols;
  t.scale_dtype = dtype;
  quant::allocate_codes(t);
  const int bits = quant::elem_bits(elem);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t code = uint32_t(rng()()) & ((1u << bits) - 1u);
      if (elem == quant::ElemType::Fp8E4M3 && (code & 0x7F) == 0x7F) code = 0x30;
      quant::set_code(t, r, c, code);
    }
  quant::set_scale_layout(t, 1, block_cols);
  for (float& s : t.scales) {
    s = uniform(0.01f, 0.1f);
    if (dtype == quant::ScaleDType::E4M3) s = fp8_e4m3_to_f32(quant::f32_to_fp8_e4m3(s * 100.0f));
  }
  return t;
}

TEST(QuantLinear, IntegerWeightOnlySchemesRunA16) {
  for (int bits : {2, 4, 8}) {
    for (bool symmetric : {true, false}) {
      for (int64_t group : {int64_t(32), int64_t(128), int64_t(-1)}) {
        const int64_t k = group == -1 ? 200 : 256;  // per-channel K need not be a multiple of 32
        const auto w =
            quant::quantize_rtn_int(random_vector(size_t(37 * k)), 37, k, {bits, group, symmetric});
        check_linear(w, {},
                     fmt::format("rtn int{} {} g{}", bits, symmetric ? "sym" : "asym", group), {},
                     "a16");
      }
    }
  }
}

TEST(QuantLinear, Int8ActivationsRunTheIntegerKernels) {
  quant::ActQuant dynamic;
  dynamic.kind = quant::ActQuantKind::DynamicPerTokenInt8;
  for (int bits : {4, 8}) {
    for (bool symmetric : {true, false}) {
      for (int64_t group : {int64_t(64), int64_t(-1)}) {
        const auto w = quant::quantize_rtn_int(random_vector(size_t(29 * 192)), 29, 192,
                                               {bits, group, symmetric});
        check_linear(w, dynamic, fmt::format("w{}a8", bits), {}, "a8");
      }
    }
  }
  // Weight-only int4 opting into int8 activations (llama.cpp's q4_0 x q8_0).
  const auto w4 = quant::quantize_rtn_int(random_vector(size_t(21 * 128)), 21, 128, {4, 32, true});
  QuantLinearOptions opt_in;
  opt_in.int8_activations_for_weight_only = true;
  auto layer = make_quantized_linear(w4, {}, WeightType::F32, opt_in);
  EXPECT_NE(layer->describe().find("a8"), std::string::npos) << layer->describe();
  // Static per-tensor int8: symmetric runs the integer kernels, a zero point the emulation.
  quant::ActQuant fixed;
  fixed.kind = quant::ActQuantKind::StaticPerTensorInt8;
  fixed.input_scale = 2.0f / 127.0f;
  const auto w8 = quant::quantize_rtn_int(random_vector(size_t(17 * 96)), 17, 96, {8, -1, true});
  check_linear(w8, fixed, "w8a8 static", {}, "a8");
  fixed.input_zero_point = 3;
  fixed.input_scale = 2.1f / 127.0f;
  check_linear(w8, fixed, "w8a8 static zp", {}, "int8/tensor");
}

TEST(QuantLinear, ActOrderPermutesActivations) {
  auto w = quant::quantize_rtn_int(random_vector(size_t(19 * 128)), 19, 128, {4, 32, false});
  std::vector<int32_t> perm(128);
  for (int32_t i = 0; i < 128; ++i) perm[size_t(i)] = i;
  std::shuffle(perm.begin(), perm.end(), rng());
  w.g_idx.assign(128, 0);
  for (int32_t i = 0; i < 128; ++i) w.g_idx[size_t(perm[size_t(i)])] = i / 32;
  check_linear(w, {}, "act-order a16", {}, "act-order");
  quant::ActQuant dynamic;
  dynamic.kind = quant::ActQuantKind::DynamicPerTokenInt8;
  check_linear(w, dynamic, "act-order a8", {}, "a8");
}

TEST(QuantLinear, Fp8WeightsWithEveryFp8ActivationKind) {
  const std::vector<float> dense = random_vector(size_t(33 * 256));
  const auto per_channel =
      quant::quantize_fp8_e4m3(dense, 33, 256, quant::Fp8Granularity::PerChannel);
  const auto per_tensor =
      quant::quantize_fp8_e4m3(dense, 33, 256, quant::Fp8Granularity::PerTensor);
  const auto block = quant::quantize_fp8_e4m3(dense, 33, 256, quant::Fp8Granularity::Block);
  quant::ActQuant act;
  check_linear(per_channel, act, "fp8 w8a16", {}, "fp8_e4m3");
  act.kind = quant::ActQuantKind::DynamicPerTokenFp8;
  check_linear(per_channel, act, "fp8 dynamic per token");
  act.kind = quant::ActQuantKind::StaticPerTensorFp8;
  act.input_scale = 2.0f / 448.0f;
  check_linear(per_tensor, act, "fp8 static per tensor");
  act = {};
  act.kind = quant::ActQuantKind::DynamicPerTokenGroupFp8;
  act.group_size = 128;
  check_linear(block, act, "block fp8");
  // W8A8-int8 activations on fp8 weights have no integer kernel: emulated, still exact.
  act = {};
  act.kind = quant::ActQuantKind::DynamicPerTokenInt8;
  check_linear(per_channel, act, "fp8 weights, int8 activations");
}

TEST(QuantLinear, Nf4AndFp4Weights) {
  check_linear(random_codes(quant::ElemType::Nf4, 23, 128, 64, quant::ScaleDType::F32), {},
               "nf4 g64", {}, "nf4");
  auto nvfp4 = random_codes(quant::ElemType::Fp4E2M1, 23, 96, 16, quant::ScaleDType::E4M3);
  nvfp4.global_scale = 1.0f / 448.0f;
  check_linear(nvfp4, {}, "nvfp4 a16", {}, "fp4");
  quant::ActQuant act;
  act.kind = quant::ActQuantKind::Nvfp4;
  act.input_scale = 2.0f / (6.0f * 448.0f);
  check_linear(nvfp4, act, "nvfp4 w4a4");
  act.input_scale.reset();
  check_linear(nvfp4, act, "nvfp4 w4a4 without a global scale");
}

TEST(QuantLinear, GgufBlockTypesRunQuantized) {
  using gguf::GgmlType;
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                        GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    quant::QuantizedTensor t;
    t.elem = quant::ElemType::GgufBlock;
    t.gguf_type = int(type);
    t.rows = 19;
    t.cols = 512;
    quant::allocate_codes(t);
    if (gguf::can_quantize(type)) {
      const std::vector<float> w = random_vector(size_t(t.rows * t.cols));
      for (int64_t r = 0; r < t.rows; ++r)
        gguf::quantize_row(type, w.data() + r * t.cols, t.codes.data() + r * t.row_bytes, t.cols);
    } else {
      for (auto& b : t.codes) b = uint8_t(rng()());
      const int64_t block_bytes = t.row_bytes / 2;
      const std::vector<int64_t> fields =
          type == GgmlType::Q4_K ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{208};
      for (int64_t off = 0; off < int64_t(t.codes.size()); off += block_bytes)
        for (int64_t f : fields) {
          const uint16_t h = f32_to_f16(uniform(0.0005f, 0.005f));
          std::memcpy(t.codes.data() + off + f, &h, 2);
        }
    }
    check_linear(t, {}, fmt::format("gguf type {}", int(type)), {}, "gguf");
    QuantLinearOptions opt_in;
    opt_in.int8_activations_for_weight_only = true;
    check_linear(t, {}, fmt::format("gguf type {} opted into a8", int(type)), opt_in);
  }
}

TEST(QuantLinear, LayoutWithoutKernelFallsBackWithActivationQuantization) {
  // Groups of 8 have no kernel layout: dense, with the int8 activation rounding still applied.
  const auto w = quant::quantize_rtn_int(random_vector(size_t(13 * 64)), 13, 64, {4, 8, true});
  quant::ActQuant dynamic;
  dynamic.kind = quant::ActQuantKind::DynamicPerTokenInt8;
  check_linear(w, dynamic, "int4 g8 fallback", {}, "dequantized");
}

TEST(QuantLinear, EveryIsaAgreesOnTheSameLayer) {
  // The dispatched ISA is fixed per process; the other ISAs' kernels are covered by
  // quant_kernel_test. Here: a decode-shaped call and a batch give the same rows
  // (batch-invariant accumulation), on whatever ISA runs.
  const auto w = quant::quantize_rtn_int(random_vector(size_t(45 * 256)), 45, 256, {4, 128, false});
  for (bool a8 : {false, true}) {
    QuantLinearOptions options;
    options.int8_activations_for_weight_only = a8;
    auto layer = make_quantized_linear(w, {}, WeightType::F32, options);
    const std::vector<float> x = random_vector(size_t(5 * 256));
    std::vector<float> batch(size_t(5 * 45)), single(45);
    layer->forward(x.data(), 5, nullptr, batch.data());
    for (int64_t r = 0; r < 5; ++r) {
      layer->forward(x.data() + r * 256, 1, nullptr, single.data());
      for (int64_t c = 0; c < 45; ++c)
        ASSERT_EQ(single[size_t(c)], batch[size_t(r * 45 + c)]) << isa_name() << " a8=" << a8;
    }
  }
  (void)isas;
}

// --cpu-int8-activations reaches the layers: build_linear with the option runs a weight-only
// online int4 layer on the a8 kernel, without it on a16.
TEST(QuantLinear, BuildLinearOptionSendsWeightOnlyLayersToTheInt8Kernel) {
  MemoryCheckpoint checkpoint;
  checkpoint.add_f32("gate", {8, 64}, random_vector(8 * 64));
  checkpoint.add_f32("up", {8, 64}, random_vector(8 * 64));
  for (bool int8_acts : {false, true}) {
    LinearBuildOptions options;
    options.int8_activations_for_weight_only = int8_acts;
    options.online = [](std::span<const float> w, int64_t rows,
                        int64_t cols) -> std::optional<quant::LinearScheme> {
      quant::LinearScheme scheme;
      scheme.weight = quant::quantize_rtn_int(std::vector<float>(w.begin(), w.end()), rows, cols,
                                              {4, 32, true});
      return scheme;
    };
    const auto layer = build_linear(checkpoint, {"gate", "up"}, {8, 8}, 64, options);
    EXPECT_NE(layer->describe().find(int8_acts ? "w4a8" : "w4a16"), std::string::npos)
        << layer->describe();
  }
}

}  // namespace
}  // namespace nibble::cpu
