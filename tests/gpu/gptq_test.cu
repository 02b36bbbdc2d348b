// GPTQ on the GPU against a scalar reference: the Hessian accumulation against a double Gram
// matrix, the solver against GPTQ column by column in double on the host (the algorithm of
// quantize/int_quantizer.cc without its lazy batches; the upper factor from the host's
// quantize/linear_algebra.cc), and the whole-model pipeline against the solver run by hand on the
// first layer's inputs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "backend/cuda/gptq_llama.h"
#include "backend/cuda/gptq_solver.h"
#include "backend/cuda/llama_kernels.h"
#include "gpu_test_util.h"
#include "quant/reference/dequantize.h"
#include "quantize/linear_algebra.h"
#include "random_llama.h"

namespace nibble::gpu_test {
namespace {

using cuda::GptqSolverOptions;

struct ReferenceResult {
  std::vector<int> codes;  // [N][K]
  std::vector<float> scales;
  std::vector<int> zeros;
  std::vector<int32_t> g_idx;
};

float round_scale(float v, quant::ScaleDType d) {
  if (d == quant::ScaleDType::BF16) return bf16_round(v);
  if (d == quant::ScaleDType::F16) return __half2float(__float2half_rn(v));
  return v;
}

void reference_params(const std::vector<double>& v, const GptqSolverOptions& o, float& scale,
                      int& zero) {
  const int maxq = (1 << o.bits) - 1;
  double lo = 0.0, hi = 0.0;
  for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x);
  const float smallest =
      o.scale_dtype == quant::ScaleDType::F16 ? 6.103515625e-05f : 1.1754944e-38f;
  if (o.symmetric) {
    double amax = std::max(-lo, hi);
    if (amax == 0.0) amax = 1.0;
    scale = std::max(round_scale(float(2.0 * amax / maxq), o.scale_dtype), smallest);
    zero = 1 << (o.bits - 1);
    return;
  }
  if (lo == 0.0 && hi == 0.0) lo = -1.0, hi = 1.0;
  scale = std::max(round_scale(float((hi - lo) / maxq), o.scale_dtype), smallest);
  zero = std::clamp(int(std::nearbyint(-lo / double(scale))), o.min_zero, maxq);
}

// GPTQ one column at a time. With groups that start and end inside one lazy block or on block
// boundaries (the cases below), the blocked algorithm computes the same values.
ReferenceResult reference_gptq(const std::vector<float>& w, int64_t N, int64_t K,
                               const std::vector<float>& h, const GptqSolverOptions& o) {
  std::vector<int64_t> perm(static_cast<size_t>(K));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return h[size_t(a * K + a)] > h[size_t(b * K + b)];
    });
  }
  std::vector<uint8_t> dead(static_cast<size_t>(K));
  std::vector<double> hp(static_cast<size_t>(K * K));
  double mean = 0.0;
  for (int64_t i = 0; i < K; ++i) {
    const int64_t k = perm[size_t(i)];
    dead[size_t(k)] = h[size_t(k * K + k)] == 0.0f;
    for (int64_t j = 0; j < K; ++j) hp[size_t(i * K + j)] = h[size_t(k * K + perm[size_t(j)])];
    if (dead[size_t(k)]) hp[size_t(i * K + i)] = 1.0;
    mean += hp[size_t(i * K + i)];
  }
  mean /= double(K);
  std::vector<double> u;
  for (double damp = o.damp_percent;; damp = damp == 0.0 ? 0.01 : damp * 4.0) {
    std::vector<double> hd = hp;
    for (int64_t i = 0; i < K; ++i) hd[size_t(i * K + i)] += damp * mean;
    if (quantize::inverse_upper_cholesky(hd, K, u)) break;
  }
  const int64_t group = o.group_size == -1 ? K : std::min(o.group_size, K);
  const bool grouped = o.group_size != -1;
  const int64_t n_groups = (K + group - 1) / group;
  const int maxq = (1 << o.bits) - 1;
  ReferenceResult r;
  r.codes.assign(size_t(N * K), 0);
  r.scales.assign(size_t(N * n_groups), 0.0f);
  r.zeros.assign(size_t(N * n_groups), 0);
  r.g_idx.assign(size_t(K), 0);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> row(static_cast<size_t>(K));  // processing order
    for (int64_t i = 0; i < K; ++i) {
      const int64_t k = perm[size_t(i)];
      row[size_t(i)] = dead[size_t(k)] ? 0.0 : double(w[size_t(n * K + k)]);
    }
    if (o.static_groups || !grouped) {
      for (int64_t g = 0; g < n_groups; ++g) {
        std::vector<double> v;
        for (int64_t k = g * group; k < std::min(K, (g + 1) * group); ++k)
          v.push_back(dead[size_t(k)] ? 0.0 : double(w[size_t(n * K + k)]));
        reference_params(v, o, r.scales[size_t(n * n_groups + g)],
                         r.zeros[size_t(n * n_groups + g)]);
      }
    }
    for (int64_t i = 0; i < K; ++i) {
      const int64_t k = perm[size_t(i)];
      int64_t g = 0;
      if (grouped) g = o.static_groups ? k / group : i / group;
      if (grouped && !o.static_groups && i % group == 0) {
        std::vector<double> v(row.begin() + i, row.begin() + std::min(K, i + group));
        reference_params(v, o, r.scales[size_t(n * n_groups + g)],
                         r.zeros[size_t(n * n_groups + g)]);
      }
      r.g_idx[size_t(k)] = int32_t(g);
      const float s = r.scales[size_t(n * n_groups + g)];
      const int z = r.zeros[size_t(n * n_groups + g)];
      const int q = std::clamp(int(std::nearbyint(row[size_t(i)] / double(s))) + z, 0, maxq);
      r.codes[size_t(n * K + k)] = q;
      const double e = (row[size_t(i)] - double(s) * double(q - z)) / u[size_t(i * K + i)];
      for (int64_t j = i + 1; j < K; ++j) row[size_t(j)] -= e * u[size_t(i * K + j)];
    }
  }
  return r;
}

// Inputs with uneven column scales and correlated columns (an isotropic H would make GPTQ equal
// to round-to-nearest), rounded to bf16; `dead` columns are all zero.
std::vector<__nv_bfloat16> calibration_inputs(int64_t m, int64_t k,
                                              const std::vector<int64_t>& dead) {
  const std::vector<float> scale = random_floats(size_t(k), 1.0f);
  const std::vector<float> z = random_floats(size_t(m * k), 1.0f),
                           shared = random_floats(size_t(m * 7), 1.0f);
  std::vector<__nv_bfloat16> x(static_cast<size_t>(m * k));
  for (int64_t t = 0; t < m; ++t)
    for (int64_t c = 0; c < k; ++c) {
      const bool is_dead = std::find(dead.begin(), dead.end(), c) != dead.end();
      const float v = (0.1f + 2.0f * std::abs(scale[size_t(c)])) *
                      (z[size_t(t * k + c)] + 0.8f * shared[size_t(t * 7 + c % 7)]);
      x[size_t(t * k + c)] = __float2bfloat16_rn(is_dead ? 0.0f : v);
    }
  return x;
}

// tr((W − Ŵ)·H·(W − Ŵ)ᵀ): the output error on the calibration inputs.
double output_error(const std::vector<float>& w, const std::vector<double>& w_hat, int64_t N,
                    int64_t K, const std::vector<float>& h) {
  double total = 0.0;
  std::vector<double> d(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k)
      d[size_t(k)] = double(w[size_t(n * K + k)]) - w_hat[size_t(n * K + k)];
    for (int64_t i = 0; i < K; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < K; ++j) s += double(h[size_t(i * K + j)]) * d[size_t(j)];
      total += d[size_t(i)] * s;
    }
  }
  return total;
}

void check_solver(const std::string& name, int64_t N, int64_t K, int64_t m,
                  const std::vector<int64_t>& dead, const GptqSolverOptions& o) {
  const std::vector<__nv_bfloat16> x = calibration_inputs(m, K, dead);
  const std::vector<__nv_bfloat16> wb = random_bf16(size_t(N * K), 0.1f);
  std::vector<float> w(wb.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = __bfloat162float(wb[i]);
  cudaStream_t stream = nullptr;
  NIBBLE_CUDA_CHECK(cudaStreamCreate(&stream));
  cuda::CudaGptqSolver solver(stream);
  auto x_dev = to_device(x);
  auto w_dev = to_device(wb);
  cuda::DeviceBuffer h_dev(size_t(K * K) * 4), w_hat(size_t(N * K) * 2);
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(h_dev.get(), 0, h_dev.bytes(), stream));
  // Two calls, as the pipeline accumulates chunk by chunk.
  const int64_t half = m / 2;
  solver.accumulate_hessian(x_dev.get<__nv_bfloat16>(), half, K, h_dev.get<float>());
  solver.accumulate_hessian(x_dev.get<__nv_bfloat16>() + half * K, m - half, K, h_dev.get<float>());
  const std::vector<float> h = to_host<float>(h_dev, size_t(K * K));
  // |error| of an f32 sum of m products: a few ulps of Σ|products| (bound 2^-16).
  int bad_h = 0;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t t = 0; t < m; ++t) {
        const double p =
            double(__bfloat162float(x[size_t(t * K + i)])) * __bfloat162float(x[size_t(t * K + j)]);
        exact += p;
        magnitude += std::abs(p);
      }
      if (std::abs(double(h[size_t(i * K + j)]) - exact) > magnitude * std::ldexp(1.0, -16))
        ++bad_h;
    }
  GPU_EXPECT(bad_h == 0, "%s: %d Hessian entries off the double Gram matrix", name.c_str(), bad_h);

  const cuda::GptqLinearResult got = solver.quantize(
      w_dev.get<__nv_bfloat16>(), N, K, h_dev.get<float>(), o, w_hat.get<__nv_bfloat16>());
  const ReferenceResult want = reference_gptq(w, N, K, h, o);
  // Both run in double; only summation order differs, which can flip a code where w/s sits on a
  // rounding boundary to ~1e-12: allow one in a thousand (the runs seen have none).
  size_t code_diff = 0, param_diff = 0;
  for (size_t i = 0; i < want.codes.size(); ++i) code_diff += int(got.codes[i]) != want.codes[i];
  for (size_t i = 0; i < want.scales.size(); ++i) {
    param_diff += got.zeros[i] != want.zeros[i] ||
                  std::abs(got.scales[i] - want.scales[i]) > 1e-6f * std::abs(want.scales[i]);
  }
  GPU_EXPECT(code_diff <= want.codes.size() / 1000, "%s: %zu of %zu codes differ", name.c_str(),
             code_diff, want.codes.size());
  GPU_EXPECT(
      param_diff <= want.scales.size() / 1000 + (code_diff > 0 ? want.scales.size() / 100 : 0),
      "%s: %zu of %zu group parameters differ", name.c_str(), param_diff, want.scales.size());
  if (o.group_size != -1) {
    GPU_EXPECT(got.g_idx == want.g_idx, "%s: g_idx differs", name.c_str());
  }
  // Ŵ is exactly the dequantized codes (bf16), and the canonical tensor dequantizes to it.
  const std::vector<__nv_bfloat16> w_hat_host = to_host<__nv_bfloat16>(w_hat, size_t(N * K));
  const std::vector<float> canonical = quant::dequantize(got.to_tensor(o));
  std::vector<double> gptq_hat(static_cast<size_t>(N * K)), rtn_hat(size_t(N * K));
  size_t hat_diff = 0, canonical_diff = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t g = got.g_idx.empty() ? 0 : got.g_idx[size_t(k)];
      const int64_t n_groups = int64_t(got.scales.size()) / N;
      const float s = got.scales[size_t(n * n_groups + g)];
      const int z = got.zeros[size_t(n * n_groups + g)];
      const double deq = double(s) * double(int(got.codes[size_t(n * K + k)]) - z);
      gptq_hat[size_t(n * K + k)] = deq;
      hat_diff += __bfloat162float(w_hat_host[size_t(n * K + k)]) != bf16_round(float(deq));
      canonical_diff +=
          std::abs(double(canonical[size_t(n * K + k)]) - deq) > 1e-6 * std::abs(deq) + 1e-30;
    }
  GPU_EXPECT(hat_diff == 0, "%s: %zu dequantized weights differ from the codes", name.c_str(),
             hat_diff);
  GPU_EXPECT(canonical_diff == 0, "%s: %zu canonical-tensor values differ", name.c_str(),
             canonical_diff);
  // GPTQ must beat round-to-nearest on its own calibration inputs.
  GptqSolverOptions rtn = o;
  rtn.act_order = false;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t group = o.group_size == -1 ? K : std::min(o.group_size, K);
    for (int64_t k0 = 0; k0 < K; k0 += group) {
      std::vector<double> v;
      for (int64_t k = k0; k < std::min(K, k0 + group); ++k) {
        const bool is_dead = std::find(dead.begin(), dead.end(), k) != dead.end();
        v.push_back(is_dead ? 0.0 : double(w[size_t(n * K + k)]));
      }
      float s;
      int z;
      reference_params(v, rtn, s, z);
      for (size_t c = 0; c < v.size(); ++c) {
        const int q = std::clamp(int(std::nearbyint(v[c] / double(s))) + z, 0, (1 << o.bits) - 1);
        rtn_hat[size_t(n * K + k0) + c] = double(s) * double(q - z);
      }
    }
  }
  const double e_gptq = output_error(w, gptq_hat, N, K, h),
               e_rtn = output_error(w, rtn_hat, N, K, h);
  GPU_EXPECT(e_gptq < e_rtn, "%s: GPTQ output error %.4g ≥ RTN's %.4g", name.c_str(), e_gptq,
             e_rtn);
  std::printf("  %s: codes differing %zu / %zu, output error GPTQ / RTN = %.3f, damp %.3g\n",
              name.c_str(), code_diff, want.codes.size(), e_gptq / e_rtn, got.damp_percent);
  NIBBLE_CUDA_CHECK(cudaStreamDestroy(stream));
}

GPU_TEST(gptq_solver_matches_column_by_column_reference) {
  GptqSolverOptions o;
  check_solver("4-bit g128 sym", 96, 256, 512, {}, o);
  o.group_size = 64;
  o.symmetric = false;
  o.min_zero = 1;
  o.scale_dtype = quant::ScaleDType::F16;
  check_solver("4-bit g64 asym f16, K=200, dead column", 70, 200, 400, {17}, o);
  o = GptqSolverOptions{};
  o.bits = 8;
  o.group_size = -1;
  o.symmetric = false;
  o.act_order = true;
  o.scale_dtype = quant::ScaleDType::BF16;
  check_solver("8-bit per-row asym act-order bf16", 50, 320, 640, {}, o);
  o = GptqSolverOptions{};
  o.bits = 3;
  o.group_size = 32;
  o.act_order = true;
  o.static_groups = true;
  check_solver("3-bit g32 act-order static groups", 64, 256, 512, {3, 200}, o);
  o = GptqSolverOptions{};
  o.bits = 2;
  o.group_size = 32;
  o.symmetric = false;
  o.block_size = 32;
  o.act_order = true;
  // 64 inputs for 128 columns: H has rank 64 and needs the dampening.
  check_solver("2-bit g32 asym block 32, rank-deficient", 33, 128, 64, {5}, o);
}

GPU_TEST(gptq_solver_rejects_bad_options) {
  cuda::CudaGptqSolver solver(nullptr);
  cuda::DeviceBuffer w(64 * 64 * 2), h(64 * 64 * 4);
  auto rejects = [&](GptqSolverOptions o, const std::string& needle) {
    try {
      solver.quantize(w.get<__nv_bfloat16>(), 64, 64, h.get<float>(), o, nullptr);
      record_failure("accepted options that should fail with '" + needle + "'");
    } catch (const std::exception& e) {
      GPU_EXPECT(std::string(e.what()).find(needle) != std::string::npos, "message '%s'", e.what());
    }
  };
  GptqSolverOptions o;
  o.bits = 5;
  rejects(o, "bits=5");
  o = GptqSolverOptions{};
  o.block_size = 256;
  rejects(o, "block size 256");
  o = GptqSolverOptions{};
  o.group_size = 0;
  rejects(o, "group size 0");
}

// The pipeline on a small random model: every linear's dense weight becomes its dequantized
// codes, and the first layer's q/k/v codes equal the solver's on the inputs computed by hand
// (embedding → RMSNorm, accumulated in the same chunks).
GPU_TEST(gptq_pipeline_quantizes_every_linear_in_place) {
  auto model = random_model(/*w4a16=*/false, 64);
  const cuda::CudaLlamaConfig& c = model->config();
  cuda::GptqCalibration cal;
  cal.samples = 4;
  cal.seqlen = 48;
  cal.samples_per_chunk = 2;
  std::vector<int32_t> tokens(static_cast<size_t>(cal.samples * cal.seqlen));
  std::uniform_int_distribution<int32_t> pick(0, int32_t(kVocab) - 1);
  for (auto& t : tokens) t = pick(rng());
  GptqSolverOptions o;
  o.group_size = 64;
  o.symmetric = false;

  // By hand: layer 0's q/k/v before the pipeline overwrites it.
  const cuda::CudaLinear& qkv = model->layers[0].qkv;
  cuda::DeviceBuffer qkv_copy(qkv.dense.bytes());
  NIBBLE_CUDA_CHECK(
      cudaMemcpy(qkv_copy.get(), qkv.dense.get(), qkv.dense.bytes(), cudaMemcpyDeviceToDevice));
  cudaStream_t stream = model->stream();
  cuda::CudaGptqSolver solver(stream);
  auto ids = to_device(tokens);
  const int64_t chunk = cal.samples_per_chunk * cal.seqlen;
  cuda::DeviceBuffer x(size_t(tokens.size() * c.hidden) * 2), normed(size_t(chunk * c.hidden) * 2),
      h(size_t(c.hidden * c.hidden) * 4);
  cuda::embedding_lookup(model->embedding.get(), ids.get<int32_t>(), c.hidden, x.get(), stream,
                         int64_t(tokens.size()));
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(h.get(), 0, h.bytes(), stream));
  for (int64_t ch = 0; ch < cal.samples / cal.samples_per_chunk; ++ch) {
    cuda::rms_norm(x.get<__nv_bfloat16>() + ch * chunk * c.hidden, nullptr,
                   model->layers[0].attn_norm.get(), normed.get(), c.hidden, c.rms_eps, stream,
                   chunk);
    solver.accumulate_hessian(normed.get<__nv_bfloat16>(), chunk, c.hidden, h.get<float>());
  }
  const cuda::GptqLinearResult by_hand = solver.quantize(qkv_copy.get<__nv_bfloat16>(), qkv.rows,
                                                         qkv.cols, h.get<float>(), o, nullptr);

  int64_t reported = 0;
  const cuda::GptqModelResult r =
      cuda::gptq_quantize_llama(*model, tokens, cal, o, [&](int64_t) { ++reported; });
  GPU_EXPECT(reported == kLayers, "progress called %lld times", (long long)reported);
  GPU_EXPECT(r.linears.size() == size_t(4 * kLayers), "%zu results", r.linears.size());
  GPU_EXPECT(r.linears[0].codes == by_hand.codes && r.linears[0].scales == by_hand.scales,
             "layer 0 q/k/v differs from the solver on the same inputs");
  for (int64_t l = 0; l < kLayers; ++l) {
    const cuda::CudaLinear* linears[] = {&model->layers[size_t(l)].qkv, &model->layers[size_t(l)].o,
                                         &model->layers[size_t(l)].gate_up,
                                         &model->layers[size_t(l)].down};
    for (int i = 0; i < 4; ++i) {
      const cuda::GptqLinearResult& q = r.linears[size_t(4 * l + i)];
      GPU_EXPECT(q.rows == linears[i]->rows && q.cols == linears[i]->cols,
                 "layer %lld linear %d shape", (long long)l, i);
      const std::vector<float> deq = quant::dequantize(q.to_tensor(o));
      const std::vector<__nv_bfloat16> held =
          to_host<__nv_bfloat16>(linears[i]->dense, size_t(q.rows * q.cols));
      size_t diff = 0;
      for (size_t e = 0; e < deq.size(); ++e)
        diff += __bfloat162float(held[e]) != bf16_round(deq[e]);
      GPU_EXPECT(diff == 0, "layer %lld linear %d: %zu weights are not the dequantized codes",
                 (long long)l, i, diff);
    }
  }
  std::printf("  pipeline: %.3f s (forward %.3f, solve %.3f)\n", r.seconds, r.forward_seconds,
              r.solve_seconds);
}

}  // namespace
}  // namespace nibble::gpu_test
