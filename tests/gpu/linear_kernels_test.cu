// GPU linear kernels against the CPU scalar reference (quant::dequantize + f64 matmul) on fresh
// random inputs, odd shapes included, outputs poisoned with NaN before every run.
//
// Bounds, per element, |y - ref| ≤ rel·|ref| + abs·Σ|x·w|:
//  - bf16 output rounding (8 significant bits, round to nearest) is ≤ 2^-8·|y|/(1 + 2^-8):
//    rel = 2^-8 covers it, with little room (ratios up to ~0.93 of the bound are normal);
//  - f32 accumulation in any order (tensor cores, split-K) is ≪ 2^-12·Σ|x·w|;
//  - the DequantGemm path rounds each weight to bf16 first (≤ 2^-9 each): abs = 2^-8;
//  - fp8: e4m3 × e4m3 products are exact, so as bf16, but cuBLASLt's fast accumulation keeps
//    fewer bits (abs = 2^-9) and the fallback scaling adds one bf16 rounding (rel = 2^-7).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backend/cuda/device_properties.h"
#include "backend/cuda/fp8_linear.h"
#include "backend/cuda/llama_kernels.h"
#include "backend/cuda/lt_gemm.h"
#include "backend/cuda/wxa16_linear.h"
#include "gpu_test_util.h"
#include "quant/reference/dequantize.h"
#include "quant/reference/fp8.h"
#include "quant/types.h"
#include "reference_adapter.h"

namespace nibble::gpu_test {
namespace {

using cuda::DeviceBuffer;
using quant::QuantizedTensor;

constexpr double kRel = 1.0 / 256;
constexpr double kAccum = 1.0 / 4096;
constexpr double kBf16Weights = 1.0 / 256;

std::vector<float> to_floats(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

cuda::LtGemm& lt() {
  static cuda::LtGemm instance;
  return instance;
}

GPU_TEST(dense_bf16_gemm_matches_f64) {
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{1, 4096, 1024}, Shape{17, 1000, 777}, Shape{64, 256, 4096},
                        Shape{300, 96, 200}, Shape{3, 7, 9}}) {
    const auto x = random_bf16(size_t(s.m * s.k), 1.0f);
    const auto w = random_bf16(size_t(s.n * s.k), 0.05f);
    auto dx = to_device(x), dw = to_device(w);
    DeviceBuffer dy(size_t(s.m * s.n) * 2);
    poison(dy);
    cuda::dense_gemm_bf16(lt(), dx.get(), dw.get(), dy.get(), s.m, s.n, s.k, nullptr);
    const auto ref = reference_matmul(to_floats(x), to_floats(w), s.m, s.n, s.k);
    char what[128];
    std::snprintf(what, sizeof(what), "bf16 M=%lld N=%lld K=%lld", (long long)s.m, (long long)s.n,
                  (long long)s.k);
    expect_close(what, to_host<__nv_bfloat16>(dy, size_t(s.m * s.n)), ref, kRel, kAccum);
  }
}

struct IntCase {
  int bits;
  bool symmetric;
  int64_t group;  // -1: per-channel
  quant::ScaleDType scale_dtype;
  int64_t n, k;
  std::vector<int64_t> ms;
  bool act_order = false;  // a shuffled g_idx (GPTQ desc_act): every group its size, scattered
};

// A random weight quantized by the reference RTN quantizer, with scales rounded to the tagged
// dtype as a checkpoint would store them.
QuantizedTensor random_int_weight(const IntCase& c) {
  const auto w = random_floats(size_t(c.n * c.k), 0.05f);
  QuantizedTensor t = reference_rtn_int(w, c.n, c.k, c.bits, c.group, c.symmetric);
  for (float& s : t.scales) {
    if (c.scale_dtype == quant::ScaleDType::F16) s = __half2float(__float2half_rn(s));
    if (c.scale_dtype == quant::ScaleDType::BF16) s = bf16_round(s);
  }
  t.scale_dtype = c.scale_dtype;
  if (c.act_order) {
    std::vector<int64_t> order(size_t(c.k));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng());
    t.g_idx.assign(size_t(c.k), 0);
    for (int64_t i = 0; i < c.k; ++i) t.g_idx[size_t(order[size_t(i)])] = int32_t(i / c.group);
  }
  return t;
}

const char* dtype_name(quant::ScaleDType d) {
  return d == quant::ScaleDType::F16 ? "f16" : d == quant::ScaleDType::BF16 ? "bf16" : "f32";
}

void run_int_case(const IntCase& c) {
  const QuantizedTensor t = random_int_weight(c);
  const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(t, "test weight");
  const std::vector<float> deq = quant::dequantize(t);

  // The bf16 dequantization is exact up to the one rounding of each weight to bf16 (stored
  // column j of an act-order weight is input column perm[j]).
  std::vector<int32_t> perm(size_t(c.k));
  std::iota(perm.begin(), perm.end(), 0);
  GPU_EXPECT(c.act_order == (w.input_perm.bytes() > 0), "input_perm present iff act-order");
  if (w.input_perm.bytes() > 0) perm = to_host<int32_t>(w.input_perm, size_t(c.k));
  {
    DeviceBuffer out(size_t(w.n_tiles * 8 * w.padded_cols()) * 2);
    poison(out);
    cuda::wxa16_dequantize(w, out.get(), nullptr);
    const auto host = to_host<__nv_bfloat16>(out, size_t(w.n_tiles * 8 * w.padded_cols()));
    size_t mismatches = 0;
    for (int64_t n = 0; n < c.n; ++n) {
      for (int64_t k = 0; k < c.k; ++k) {
        const float got = __bfloat162float(host[size_t(n * w.padded_cols() + k)]);
        if (!(got == bf16_round(deq[size_t(n * c.k + perm[size_t(k)])]))) ++mismatches;
      }
    }
    GPU_EXPECT(mismatches == 0,
               "W%dA16 dequantize: %zu of %lld weights differ from bf16(reference)", c.bits,
               mismatches, (long long)(c.n * c.k));
  }

  cuda::WxA16Workspace ws;
  for (const int64_t m : c.ms) {
    const auto x = random_bf16(size_t(m * c.k), 1.0f);
    const auto ref = reference_matmul(to_floats(x), deq, m, c.n, c.k);
    auto dx = to_device(x);
    DeviceBuffer dy(size_t(m * c.n) * 2);
    for (const auto path : {cuda::WxA16Path::BulkGemv, cuda::WxA16Path::Gemv,
                            cuda::WxA16Path::Stream, cuda::WxA16Path::DequantGemm}) {
      if (path == cuda::WxA16Path::Gemv && !cuda::wxa16_gemv_supports(w, m)) continue;
      if (path == cuda::WxA16Path::BulkGemv && !cuda::wxa16_bulk_gemv_supports(w, m)) continue;
      // Twice per path: the second call checks that the split-K workspace was left clean.
      for (int repeat = 0; repeat < 2; ++repeat) {
        poison(dy);
        cuda::wxa16_linear(lt(), w, dx.get(), m, dy.get(), ws, nullptr, path);
        char what[160];
        std::snprintf(what, sizeof(what), "W%dA16 %s g%lld%s %s N=%lld K=%lld M=%lld %s#%d", c.bits,
                      c.symmetric ? "sym" : "asym", (long long)c.group,
                      c.act_order ? " act-order" : "", dtype_name(c.scale_dtype), (long long)c.n,
                      (long long)c.k, (long long)m,
                      path == cuda::WxA16Path::BulkGemv ? "bulk-gemv"
                      : path == cuda::WxA16Path::Gemv   ? "gemv"
                      : path == cuda::WxA16Path::Stream ? "stream"
                                                        : "dequant+lt",
                      repeat);
        const bool stream = path != cuda::WxA16Path::DequantGemm;
        expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * c.n)), ref, kRel,
                     stream ? kAccum : kBf16Weights);
      }
    }
  }
}

GPU_TEST(w4a16_matches_reference) {
  using D = quant::ScaleDType;
  const IntCase cases[] = {
      {4, true, 128, D::BF16, 1000, 4096, {1, 7, 16}},
      {4, false, 128, D::F16, 523, 1000, {1, 16, 33}},
      {4, true, 32, D::F32, 264, 2080, {5, 64}},
      {4, false, 64, D::BF16, 777, 4160, {100}},
      {4, true, -1, D::F16, 300, 333, {3, 130}},
      {4, true, 128, D::F16, 4096, 4096, {1}},
      // Decode kernel: odd tile counts (the second tile of a warp's pair is missing), asymmetric
      // g32 (four scale segments per unit), K not a multiple of the unit, every batch width.
      {4, false, 32, D::BF16, 1001, 1184, {2, 8, 9}},
      {4, true, 128, D::BF16, 28 * 8 + 3, 14336, {1, 4, 12}},
      {4, false, 64, D::F32, 136, 8192, {1, 16}},
      // Act-order: x gathered into the stored column order on every path.
      {4, true, 128, D::F16, 520, 1024, {1, 5, 16, 64, 200}, true},
      {4, false, 32, D::BF16, 264, 2080, {3, 40}, true},
  };
  for (const auto& c : cases) run_int_case(c);
}

GPU_TEST(w8a16_matches_reference) {
  using D = quant::ScaleDType;
  const IntCase cases[] = {
      {8, true, -1, D::BF16, 1000, 4096, {1, 16, 64}}, {8, false, 64, D::F16, 301, 999, {9}},
      {8, true, 128, D::F32, 512, 1024, {2}},          {8, true, 32, D::F16, 96, 4096, {17}},
      {8, false, 64, D::F16, 136, 1024, {1, 9}, true},
  };
  for (const auto& c : cases) run_int_case(c);
}

// Split-K must not let CTA timing into the result: the same call repeated gives the same bits,
// on both split-K paths and for several split counts (the Gemv path's CTAs-per-SM target sets
// its split count). Greedy decoding flips near-tied picks otherwise.
GPU_TEST(wxa16_split_k_is_bit_identical_run_to_run) {
  struct Case {
    int bits;
    int64_t group, n, k;
    std::vector<int64_t> ms;
  };
  const Case cases[] = {
      {4, 128, 4096, 4096, {1, 16}}, {4, 128, 1000, 14336, {1, 5, 16}}, {4, 128, 6144, 4096, {1}},
      {4, 32, 264, 2080, {3, 64}},   {8, -1, 1000, 4096, {1, 16}},
  };
  cuda::WxA16GemvTuning& tuning = cuda::wxa16_gemv_tuning();
  const cuda::WxA16GemvTuning saved = tuning;
  cuda::WxA16Workspace ws;
  for (const Case& c : cases) {
    const IntCase ic{c.bits, true, c.group, quant::ScaleDType::F16, c.n, c.k, {}};
    const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(random_int_weight(ic), "test weight");
    for (const int64_t m : c.ms) {
      const auto x = random_bf16(size_t(m * c.k), 1.0f);
      auto dx = to_device(x);
      DeviceBuffer dy(size_t(m * c.n) * 2);
      for (const auto path : {cuda::WxA16Path::Gemv, cuda::WxA16Path::Stream}) {
        if (path == cuda::WxA16Path::Gemv && !cuda::wxa16_gemv_supports(w, m)) continue;
        const bool gemv = path == cuda::WxA16Path::Gemv;
        for (const int ctas : {1, 2, 4, 8}) {
          if (!gemv && ctas != 2) continue;
          tuning.ctas_per_sm = ctas;
          std::vector<__nv_bfloat16> first;
          size_t differing = 0, nan = 0;
          for (int repeat = 0; repeat < 4; ++repeat) {
            poison(dy);
            cuda::wxa16_linear(lt(), w, dx.get(), m, dy.get(), ws, nullptr, path);
            const auto y = to_host<__nv_bfloat16>(dy, size_t(m * c.n));
            for (const auto v : y) nan += std::isnan(__bfloat162float(v)) ? 1 : 0;
            if (repeat == 0) {
              first = y;
              continue;
            }
            for (size_t i = 0; i < y.size(); ++i) {
              differing += std::memcmp(&y[i], &first[i], sizeof(y[i])) != 0 ? 1 : 0;
            }
          }
          if (gemv && ctas == 2) {
            // Programmatic launch changes when the kernel starts, never what it computes.
            tuning.programmatic_launch = true;
            poison(dy);
            cuda::wxa16_linear(lt(), w, dx.get(), m, dy.get(), ws, nullptr, path);
            const auto y = to_host<__nv_bfloat16>(dy, size_t(m * c.n));
            tuning.programmatic_launch = saved.programmatic_launch;
            for (size_t i = 0; i < y.size(); ++i) {
              differing += std::memcmp(&y[i], &first[i], sizeof(y[i])) != 0 ? 1 : 0;
            }
          }
          GPU_EXPECT(differing == 0 && nan == 0,
                     "W%dA16 g%lld N=%lld K=%lld M=%lld %s %d CTAs/SM: %zu outputs differ between "
                     "repeats, %zu NaN",
                     c.bits, (long long)c.group, (long long)c.n, (long long)c.k, (long long)m,
                     gemv ? "gemv" : "stream", ctas, differing, nan);
        }
      }
    }
  }
  tuning = saved;
}

// Every ring shape of the bulk-copy GEMV (units per warp, stage count; a chunk past K's end and a
// ring wrapping many times) against the reference, and repeated calls bit-identical.
GPU_TEST(wxa16_bulk_gemv_variants_match_reference) {
  using D = quant::ScaleDType;
  const IntCase cases[] = {
      {4, true, 128, D::F32, 28 * 8 + 3, 14336, {1, 3}},
      {4, false, 32, D::BF16, 1001, 1184, {1, 8}},
      {8, true, -1, D::BF16, 523, 4096, {1, 2}},
      {8, false, 64, D::F16, 301, 999, {5}},
  };
  cuda::WxA16GemvTuning& tuning = cuda::wxa16_gemv_tuning();
  const cuda::WxA16GemvTuning saved = tuning;
  cuda::WxA16Workspace ws;
  for (const IntCase& c : cases) {
    const QuantizedTensor t = random_int_weight(c);
    const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(t, "test weight");
    const std::vector<float> deq = quant::dequantize(t);
    for (const int64_t m : c.ms) {
      const auto x = random_bf16(size_t(m * c.k), 1.0f);
      const auto ref = reference_matmul(to_floats(x), deq, m, c.n, c.k);
      auto dx = to_device(x);
      DeviceBuffer dy(size_t(m * c.n) * 2);
      for (const int upw : {1, 2, 4}) {
        for (const int stages : {2, 6}) {
          tuning.bulk_units_per_warp = upw;
          tuning.bulk_stages = stages;
          if (!cuda::wxa16_bulk_gemv_supports(w, m)) continue;
          std::vector<__nv_bfloat16> first;
          size_t differing = 0;
          for (int repeat = 0; repeat < 3; ++repeat) {
            poison(dy);
            cuda::wxa16_linear(lt(), w, dx.get(), m, dy.get(), ws, nullptr,
                               cuda::WxA16Path::BulkGemv);
            const auto y = to_host<__nv_bfloat16>(dy, size_t(m * c.n));
            if (repeat == 0) {
              first = y;
              char what[160];
              std::snprintf(what, sizeof(what),
                            "W%dA16 bulk-gemv %s g%lld N=%lld K=%lld M=%lld upw=%d stages=%d",
                            c.bits, c.symmetric ? "sym" : "asym", (long long)c.group,
                            (long long)c.n, (long long)c.k, (long long)m, upw, stages);
              expect_close(what, y, ref, kRel, kAccum);
              continue;
            }
            for (size_t i = 0; i < y.size(); ++i) {
              differing += std::memcmp(&y[i], &first[i], sizeof(y[i])) != 0 ? 1 : 0;
            }
          }
          GPU_EXPECT(differing == 0,
                     "bulk-gemv upw=%d stages=%d M=%lld: %zu outputs differ "
                     "between repeats",
                     upw, stages, (long long)m, differing);
        }
      }
    }
  }
  tuning = saved;
}

// The bulk-copy GEMV of a fused SiLU·mul input gives the same bits as silu_mul followed by the
// plain call (the same f32 operations in the same order).
void expect_silu_fusion_exact(const cuda::WxA16Weight& w, int64_t m, const char* label) {
  const int64_t k = w.cols, n = w.rows;
  const auto gate_up = random_bf16(size_t(2 * m * k), 4.0f);
  auto d_gate_up = to_device(gate_up);
  DeviceBuffer d_act(size_t(m * k) * 2), dy(size_t(m * n) * 2), dy_unfused(size_t(m * n) * 2);
  for (int64_t r = 0; r < m; ++r) {
    cuda::silu_mul(d_gate_up.get<__nv_bfloat16>() + r * 2 * k, d_act.get<__nv_bfloat16>() + r * k,
                   k, nullptr);
  }
  cuda::wxa16_bulk_gemv(w, d_act.get(), m, dy_unfused.get(), nullptr);
  poison(dy);
  cuda::WxA16Input input;
  input.kind = cuda::WxA16Input::Kind::SiluMul;
  input.x = d_gate_up.get();
  cuda::wxa16_bulk_gemv(w, input, m, dy.get(), nullptr);
  const auto fused = to_host<__nv_bfloat16>(dy, size_t(m * n));
  const auto unfused = to_host<__nv_bfloat16>(dy_unfused, size_t(m * n));
  size_t differing = 0;
  for (size_t i = 0; i < fused.size(); ++i) {
    differing += std::memcmp(&fused[i], &unfused[i], sizeof(fused[i])) != 0 ? 1 : 0;
  }
  GPU_EXPECT(differing == 0,
             "%s W%d bulk-gemv silu-fused N=%lld K=%lld M=%lld: %zu of %zu outputs differ from "
             "silu_mul + GEMV",
             label, w.bits, (long long)n, (long long)k, (long long)m, differing, fused.size());
}

// The decode fusions of the bulk-copy GEMV: residual add + RMSNorm and SiLU·mul computed while x
// is staged. RMSNorm against a CPU twin of its roundings (the sum of squares in f64, so the
// GPU's own order and rsqrtf may move a few x by one bf16 step: inside the matmul bound), the
// stored residual bit for bit; SiLU·mul bit for bit against the separate silu_mul kernel
// followed by the plain GEMV.
GPU_TEST(wxa16_bulk_gemv_fused_inputs) {
  using D = quant::ScaleDType;
  const IntCase cases[] = {
      {4, true, 128, D::F32, 28 * 8 + 3, 4096, {1, 3}},
      {8, true, -1, D::BF16, 1000, 2048, {1, 2}},
  };
  cuda::WxA16Workspace ws;
  for (const IntCase& c : cases) {
    const QuantizedTensor t = random_int_weight(c);
    const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(t, "test weight");
    const std::vector<float> deq = quant::dequantize(t);
    for (const int64_t m : c.ms) {
      if (!cuda::wxa16_bulk_gemv_fuses(w, m)) continue;
      const size_t mk = size_t(m * c.k);
      DeviceBuffer dy(size_t(m * c.n) * 2);
      // Residual add + RMSNorm.
      {
        const auto residual = random_bf16(mk, 2.0f), delta = random_bf16(mk, 1.0f);
        auto norm_weight = random_bf16(size_t(c.k), 0.5f);
        for (auto& v : norm_weight) v = __float2bfloat16(1.0f + __bfloat162float(v));
        const float eps = 1e-5f;
        std::vector<float> h(mk), x(mk);
        for (int64_t r = 0; r < m; ++r) {
          double sum = 0.0;
          for (int64_t k = 0; k < c.k; ++k) {
            const size_t i = size_t(r * c.k + k);
            h[i] = bf16_round(__bfloat162float(residual[i]) + __bfloat162float(delta[i]));
            sum += double(h[i]) * h[i];
          }
          const float inv = float(1.0 / std::sqrt(sum / double(c.k) + eps));
          for (int64_t k = 0; k < c.k; ++k) {
            const size_t i = size_t(r * c.k + k);
            x[i] = bf16_round(__bfloat162float(norm_weight[size_t(k)]) * bf16_round(h[i] * inv));
          }
        }
        const auto ref = reference_matmul(x, deq, m, c.n, c.k);
        auto d_residual = to_device(residual), d_delta = to_device(delta);
        auto d_weight = to_device(norm_weight);
        DeviceBuffer d_out(mk * 2);
        poison(d_out);
        poison(dy);
        cuda::WxA16Input input;
        input.kind = cuda::WxA16Input::Kind::ResidualRmsNorm;
        input.x = d_residual.get();
        input.delta = d_delta.get();
        input.norm_weight = d_weight.get();
        input.residual_out = d_out.get();
        input.eps = eps;
        cuda::wxa16_bulk_gemv(w, input, m, dy.get(), nullptr);
        char what[160];
        std::snprintf(what, sizeof(what), "W%dA16 bulk-gemv rmsnorm-fused N=%lld K=%lld M=%lld",
                      c.bits, (long long)c.n, (long long)c.k, (long long)m);
        expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * c.n)), ref, kRel, kAccum);
        const auto stored = to_host<__nv_bfloat16>(d_out, mk);
        size_t wrong = 0;
        for (size_t i = 0; i < mk; ++i) wrong += __bfloat162float(stored[i]) == h[i] ? 0 : 1;
        GPU_EXPECT(wrong == 0, "%s: %zu of %zu stored residuals differ from bf16(r + d)", what,
                   wrong, mk);
      }
      // SiLU·mul.
      expect_silu_fusion_exact(w, m, "int");
    }
  }
}

GPU_TEST(wxa16_refuses_scattered_groups_with_the_tensor_name) {
  IntCase c{4, true, 128, quant::ScaleDType::F16, 16, 256, {}};
  QuantizedTensor t = random_int_weight(c);
  // 129 columns in group 0: not GPTQ's act-order layout.
  t.g_idx.assign(size_t(t.cols), 1);
  for (int64_t k = 0; k <= 128; ++k) t.g_idx[size_t(k)] = 0;
  std::string message;
  try {
    cuda::prepare_wxa16_weight(t, "layers.0.mlp.down_proj");
  } catch (const Error& e) {
    message = e.what();
  }
  GPU_EXPECT(message.find("layers.0.mlp.down_proj") != std::string::npos &&
                 message.find("g_idx") != std::string::npos,
             "message: '%s'", message.c_str());
}

// An act-order weight takes no fused input (the fusion stages x in the input's order) and
// refuses an ungathered plain x on the bulk path.
GPU_TEST(wxa16_act_order_refuses_ungathered_input) {
  if (cuda::device_properties().major < 9) return;
  IntCase c{4, true, 128, quant::ScaleDType::F16, 64, 256, {}, true};
  const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(random_int_weight(c), "act-order");
  GPU_EXPECT(!cuda::wxa16_bulk_gemv_fuses(w, 1), "an act-order weight offers the fused input");
  DeviceBuffer x(256 * 2), y(64 * 2);
  std::string message;
  try {
    cuda::wxa16_bulk_gemv(w, x.get(), 1, y.get(), nullptr);
  } catch (const Error& e) {
    message = e.what();
  }
  GPU_EXPECT(message.find("act-order") != std::string::npos, "message: '%s'", message.c_str());
}

// CPU twin of quantize_fp8_per_token: the same f32 operations.
void reference_per_token(const std::vector<float>& x, int64_t m, int64_t k,
                         std::vector<uint8_t>& codes, std::vector<float>& scales) {
  codes.assign(size_t(m * k), 0);
  scales.assign(size_t(m), 1.0f);
  for (int64_t i = 0; i < m; ++i) {
    float amax = 0.0f;
    for (int64_t l = 0; l < k; ++l) amax = std::max(amax, std::fabs(x[size_t(i * k + l)]));
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    scales[size_t(i)] = s;
    for (int64_t l = 0; l < k; ++l) {
      codes[size_t(i * k + l)] = quant::f32_to_fp8_e4m3(x[size_t(i * k + l)] / s);
    }
  }
}

GPU_TEST(fp8_w8a8_matches_reference) {
  struct Case {
    int64_t m, n, k;
    bool per_channel, per_token, fast_accum;
  };
  const Case cases[] = {
      {1, 1000, 4096, false, false, false}, {1, 1000, 4096, true, true, false},
      {33, 523, 1000, true, true, false},   {33, 523, 1000, false, true, false},
      {128, 256, 2048, true, false, false}, {128, 256, 2048, false, false, true},
      {5, 64, 100, true, true, true},       {300, 200, 512, true, true, false},
  };
  for (const auto& c : cases) {
    const auto wf = random_floats(size_t(c.n * c.k), 0.05f);
    const QuantizedTensor t = reference_fp8(wf, c.n, c.k, c.per_channel);
    const cuda::Fp8Weight w = cuda::prepare_fp8_weight(t, "test fp8 weight");
    const std::vector<float> deq = quant::dequantize(t);
    const auto x = random_bf16(size_t(c.m * c.k), 1.0f);
    const auto xf = to_floats(x);

    // The activations the kernel multiplies: the CPU twin's, checked code for code.
    std::vector<uint8_t> codes;
    std::vector<float> scales;
    float static_scale = 0.0f;
    if (c.per_token) {
      reference_per_token(xf, c.m, c.k, codes, scales);
    } else {
      float amax = 0.0f;
      for (float v : xf) amax = std::max(amax, std::fabs(v));
      static_scale = amax / 448.0f * 1.25f;  // a calibrated scale rarely meets the batch's max
      codes.resize(xf.size());
      for (size_t i = 0; i < xf.size(); ++i)
        codes[i] = quant::f32_to_fp8_e4m3(xf[i] / static_scale);
      scales.assign(size_t(c.m), static_scale);
    }
    std::vector<float> xq(xf.size());
    for (size_t i = 0; i < xq.size(); ++i) {
      xq[i] =
          quant::decode_float_code(quant::ElemType::Fp8E4M3, codes[i]) * scales[i / size_t(c.k)];
    }
    const auto ref = reference_matmul(xq, deq, c.m, c.n, c.k);

    auto dx = to_device(x);
    DeviceBuffer dy(size_t(c.m * c.n) * 2);
    poison(dy);
    cuda::Fp8Workspace ws;
    cuda::Fp8Options options;
    options.act =
        c.per_token ? cuda::Fp8ActMode::DynamicPerToken : cuda::Fp8ActMode::StaticPerTensor;
    options.input_scale = static_scale;
    options.fast_accum = c.fast_accum;
    cuda::fp8_linear(lt(), w, dx.get(), c.m, dy.get(), ws, options, nullptr);

    const auto got_codes = to_host<uint8_t>(ws.x_codes, size_t(c.m * w.padded_cols));
    size_t code_mismatches = 0;
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t l = 0; l < w.padded_cols; ++l) {
        const uint8_t want = l < c.k ? codes[size_t(i * c.k + l)] : 0;
        if (got_codes[size_t(i * w.padded_cols + l)] != want) ++code_mismatches;
      }
    }
    GPU_EXPECT(code_mismatches == 0, "fp8 activation codes: %zu differ from the CPU twin",
               code_mismatches);
    if (c.per_token) {
      const auto got_scales = to_host<float>(ws.x_scales, size_t(c.m));
      GPU_EXPECT(std::memcmp(got_scales.data(), scales.data(), scales.size() * 4) == 0,
                 "per-token scales differ from the CPU twin");
    }
    // Which epilogue ran (cuBLASLt outer-vector scales or the fallback kernel), for the report.
    DeviceBuffer probe(size_t(c.m * c.n) * 2);
    const bool lt_scaled =
        cuda::fp8_gemm(lt(), w, ws.x_codes.get<uint8_t>(), ws.x_scales.get<float>(), c.per_token,
                       c.m, probe.get(), c.fast_accum, ws, nullptr);
    char what[160];
    std::snprintf(what, sizeof(what), "fp8 w:%s x:%s%s M=%lld N=%lld K=%lld (%s)",
                  c.per_channel ? "channel" : "tensor", c.per_token ? "token" : "static",
                  c.fast_accum ? " fast" : "", (long long)c.m, (long long)c.n, (long long)c.k,
                  lt_scaled ? "Lt scales" : "fallback scales");
    expect_close(what, to_host<__nv_bfloat16>(dy, size_t(c.m * c.n)), ref, 2 * kRel,
                 c.fast_accum ? 1.0 / 512 : kAccum);
  }
}

// FP8 W8A8 on the bulk-copy GEMV: e4m3 weights repacked into 8-bit units, activations quantized
// per token while staged (the CPU twin's codes and scales), per-channel and per-tensor weight
// scales; with the fused SiLU·mul input bit for bit against silu_mul + the plain call, and with
// the fused RMSNorm input against a CPU twin of norm then quantization (a code may move by one
// step where the norm's sum order moves x by one bf16 step: inside the bound).
GPU_TEST(fp8_bulk_gemv_matches_reference) {
  struct Case {
    int64_t n, k;
    bool per_channel;
    std::vector<int64_t> ms;
  };
  const Case cases[] = {{1000, 4096, true, {1, 3, 8}}, {523, 1000, false, {1, 2}}};
  for (const Case& c : cases) {
    const auto wf = random_floats(size_t(c.n * c.k), 0.05f);
    const QuantizedTensor t = reference_fp8(wf, c.n, c.k, c.per_channel);
    const cuda::WxA16Weight w = cuda::prepare_wxa16_weight(t, "test fp8 weight");
    const std::vector<float> deq = quant::dequantize(t);
    for (const int64_t m : c.ms) {
      if (!cuda::wxa16_bulk_gemv_supports(w, m)) continue;
      const size_t mk = size_t(m * c.k);
      const auto quantized_matmul = [&](const std::vector<float>& xf) {
        std::vector<uint8_t> codes;
        std::vector<float> scales;
        reference_per_token(xf, m, c.k, codes, scales);
        std::vector<float> xq(mk);
        for (size_t i = 0; i < mk; ++i) {
          xq[i] = quant::decode_float_code(quant::ElemType::Fp8E4M3, codes[i]) *
                  scales[i / size_t(c.k)];
        }
        return reference_matmul(xq, deq, m, c.n, c.k);
      };
      DeviceBuffer dy(size_t(m * c.n) * 2);
      char what[160];
      // Plain input.
      const auto x = random_bf16(mk, 1.0f);
      auto dx = to_device(x);
      poison(dy);
      cuda::wxa16_bulk_gemv(w, dx.get(), m, dy.get(), nullptr);
      std::snprintf(what, sizeof(what), "fp8 bulk-gemv w:%s N=%lld K=%lld M=%lld",
                    c.per_channel ? "channel" : "tensor", (long long)c.n, (long long)c.k,
                    (long long)m);
      expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * c.n)),
                   quantized_matmul(to_floats(x)), 2 * kRel, kAccum);
      // Fused RMSNorm (no delta), then quantization.
      {
        auto norm_weight = random_bf16(size_t(c.k), 0.5f);
        for (auto& v : norm_weight) v = __float2bfloat16(1.0f + __bfloat162float(v));
        std::vector<float> xn(mk);
        for (int64_t r = 0; r < m; ++r) {
          double sum = 0.0;
          for (int64_t k = 0; k < c.k; ++k) {
            const double v = __bfloat162float(x[size_t(r * c.k + k)]);
            sum += v * v;
          }
          const float inv = float(1.0 / std::sqrt(sum / double(c.k) + 1e-5));
          for (int64_t k = 0; k < c.k; ++k) {
            const size_t i = size_t(r * c.k + k);
            xn[i] = bf16_round(__bfloat162float(norm_weight[size_t(k)]) *
                               bf16_round(__bfloat162float(x[i]) * inv));
          }
        }
        auto d_weight = to_device(norm_weight);
        cuda::WxA16Input input;
        input.kind = cuda::WxA16Input::Kind::ResidualRmsNorm;
        input.x = dx.get();
        input.norm_weight = d_weight.get();
        poison(dy);
        cuda::wxa16_bulk_gemv(w, input, m, dy.get(), nullptr);
        std::snprintf(what, sizeof(what), "fp8 bulk-gemv rmsnorm-fused N=%lld K=%lld M=%lld",
                      (long long)c.n, (long long)c.k, (long long)m);
        expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * c.n)), quantized_matmul(xn),
                     2 * kRel, kAccum);
      }
      // Fused SiLU·mul: the same bits as silu_mul, then the plain call.
      expect_silu_fusion_exact(w, m, "fp8");
    }
  }
}

}  // namespace
}  // namespace nibble::gpu_test
