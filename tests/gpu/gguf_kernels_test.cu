// GGUF Q4_0 / Q8_0 weights on the GPU against the gguf_dequant reference (gguf-py's operations)
// on fresh random inputs, outputs poisoned first. The repacked weight is exact (d·code in f32,
// as the reference computes it), so the bounds are the W4A16 stream bounds of
// linear_kernels_test.cu: rel = 2^-8 (bf16 output) and abs = 2^-12·Σ|x·w| (f32 accumulation).
#include <cuda_bf16.h>

#include "backend/cuda/gguf_weight.h"
#include "backend/cuda/lt_gemm.h"
#include "gpu_test_util.h"
#include "quant/reference/dequantize.h"
#include "reference_adapter.h"

namespace nibble::gpu_test {
namespace {

using cuda::DeviceBuffer;

constexpr int kQ4_0 = 2;
constexpr int kQ8_0 = 8;

void run_gguf_case(int type, int64_t n, int64_t k, const std::vector<int64_t>& ms) {
  const auto wf = random_floats(size_t(n * k), 0.05f);
  const quant::QuantizedTensor blocks = reference_gguf_blocks(wf, n, k, type);
  const std::vector<float> deq = reference_gguf_dequantize(blocks);
  // The conversion alone: the int tensor dequantizes to the reference's floats bit for bit.
  const std::vector<float> converted = quant::dequantize(cuda::gguf_to_int_tensor(blocks, "test"));
  size_t mismatches = 0;
  for (size_t i = 0; i < deq.size(); ++i) mismatches += converted[i] != deq[i];
  GPU_EXPECT(mismatches == 0, "ggml type %d: %zu of %zu converted weights differ", type, mismatches,
             deq.size());

  const cuda::WxA16Weight w = cuda::prepare_gguf_weight(blocks, "test gguf weight");
  static cuda::LtGemm lt;
  cuda::WxA16Workspace ws;
  for (const int64_t m : ms) {
    std::vector<__nv_bfloat16> x = random_bf16(size_t(m * k), 1.0f);
    std::vector<float> xf(x.size());
    for (size_t i = 0; i < x.size(); ++i) xf[i] = __bfloat162float(x[i]);
    const auto ref = reference_matmul(xf, deq, m, n, k);
    auto dx = to_device(x);
    DeviceBuffer dy(size_t(m * n) * 2);
    for (int repeat = 0; repeat < 2; ++repeat) {
      poison(dy);
      cuda::wxa16_linear(lt, w, dx.get(), m, dy.get(), ws, nullptr);
      char what[128];
      std::snprintf(what, sizeof(what), "%s N=%lld K=%lld M=%lld #%d",
                    type == kQ4_0 ? "Q4_0" : "Q8_0", (long long)n, (long long)k, (long long)m,
                    repeat);
      expect_close(what, to_host<__nv_bfloat16>(dy, size_t(m * n)), ref, 1.0 / 256, 1.0 / 4096);
    }
  }
}

GPU_TEST(gguf_q4_0_matches_reference) {
  run_gguf_case(kQ4_0, 1000, 4096, {1, 3, 8});
  run_gguf_case(kQ4_0, 77, 992, {1, 16, 40});
}

GPU_TEST(gguf_q8_0_matches_reference) {
  run_gguf_case(kQ8_0, 1000, 4096, {1, 3, 8});
  run_gguf_case(kQ8_0, 77, 992, {1, 16});
}

GPU_TEST(gguf_refuses_other_types_with_the_tensor_name) {
  const auto wf = random_floats(size_t(8 * 256), 0.05f);
  const quant::QuantizedTensor blocks = reference_gguf_blocks(wf, 8, 256, 3);  // Q4_1
  std::string message;
  try {
    cuda::prepare_gguf_weight(blocks, "blk.0.ffn_down.weight");
  } catch (const Error& e) {
    message = e.what();
  }
  GPU_EXPECT(message.find("blk.0.ffn_down.weight") != std::string::npos, "message: '%s'",
             message.c_str());
}

}  // namespace
}  // namespace nibble::gpu_test
