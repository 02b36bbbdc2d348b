// W8A8 int8 (per-token int8 activations, per-channel int8 weights, cuBLASLt's int8 GEMM) against
// the CPU's semantics computed on the host: the same f32 per-token scales and codes, the integer
// dot products exactly, then the two scales. Outputs poisoned before every run; odd N and K
// exercise the padding.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cuda/int8_linear.h"
#include "gpu_test_util.h"
#include "quant/types.h"
#include "reference_adapter.h"

namespace nibble::gpu_test {
namespace {

void check_int8(int64_t m, int64_t n, int64_t k) {
  const std::vector<float> w = random_floats(size_t(n * k), 0.05f);
  const quant::QuantizedTensor t = reference_rtn_int(w, n, k, 8, -1, /*symmetric=*/true);
  const cuda::Int8Weight weight = cuda::prepare_int8_weight(t, "test int8 weight");
  const std::vector<__nv_bfloat16> x = random_bf16(size_t(m * k), 2.0f);

  // The CPU's per-token quantization (activation_quant.cc), operation for operation.
  Reference ref;
  ref.value.assign(size_t(m * n), 0.0);
  ref.absdot.assign(size_t(m * n), 0.0);
  for (int64_t r = 0; r < m; ++r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < k; ++c)
      amax = std::max(amax, std::fabs(__bfloat162float(x[size_t(r * k + c)])));
    const float s = amax / 127.0f;
    std::vector<int32_t> q(static_cast<size_t>(k), 0);
    for (int64_t c = 0; c < k; ++c) {
      if (s != 0.0f) {
        const float v = std::nearbyint(__bfloat162float(x[size_t(r * k + c)]) / s);
        q[size_t(c)] = int32_t(std::clamp(v, -127.0f, 127.0f));
      }
    }
    for (int64_t o = 0; o < n; ++o) {
      int64_t dot = 0, absdot = 0;
      const auto* codes = reinterpret_cast<const int8_t*>(t.codes.data() + o * t.row_bytes);
      for (int64_t c = 0; c < k; ++c) {
        dot += int64_t(q[size_t(c)]) * codes[c];
        absdot += std::abs(int64_t(q[size_t(c)]) * codes[c]);
      }
      const double scale = double(s) * double(t.scales[size_t(o)]);
      ref.value[size_t(r * n + o)] = double(dot) * scale;
      ref.absdot[size_t(r * n + o)] = double(absdot) * scale;
    }
  }
  auto dx = to_device(x);
  cuda::DeviceBuffer dy(size_t(m * n) * 2);
  cuda::LtGemm lt;
  cuda::Int8Workspace ws;
  for (int repeat = 0; repeat < 2; ++repeat) {
    poison(dy);
    cuda::int8_linear(lt, weight, dx.get(), m, dy.get(), ws, nullptr);
    char what[96];
    std::snprintf(what, sizeof(what), "W8A8 int8 M=%lld N=%lld K=%lld #%d", (long long)m,
                  (long long)n, (long long)k, repeat);
    // Exact integer sums; then two f32 products and the bf16 rounding of y.
    expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * n)), ref, std::ldexp(1.0, -8),
                 std::ldexp(1.0, -20));
  }
}

GPU_TEST(w8a8_int8_matches_reference) {
  check_int8(1, 4096, 4096);
  check_int8(7, 1000, 1000);
  check_int8(64, 528, 2080);
  check_int8(300, 256, 333);
  check_int8(5, 1001, 600);  // N not a multiple of 4: the scalar epilogue
}

GPU_TEST(w8a8_int8_refuses_zero_points_by_name) {
  const std::vector<float> w = random_floats(64 * 64, 0.05f);
  const quant::QuantizedTensor t = reference_rtn_int(w, 64, 64, 8, -1, /*symmetric=*/false);
  std::string message;
  try {
    cuda::prepare_int8_weight(t, "layers.3.self_attn.o_proj");
  } catch (const Error& e) {
    message = e.what();
  }
  GPU_EXPECT(message.find("layers.3.self_attn.o_proj") != std::string::npos &&
                 message.find("symmetric") != std::string::npos,
             "message: '%s'", message.c_str());
}

}  // namespace
}  // namespace nibble::gpu_test
