// The decode step's small kernels against the CPU: the greedy pick (the first index of the
// maximum over up to 64 CTAs, as torch.argmax), where it is written, and the position advance.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/llama_kernels.h"
#include "gpu_test_util.h"

namespace nibble::gpu_test {
namespace {

using cuda::DeviceBuffer;

GPU_TEST(argmax_picks_the_first_maximum) {
  DeviceBuffer scratch;
  for (const int64_t n : {int64_t(1), int64_t(5), int64_t(1000), int64_t(4097), int64_t(128256)}) {
    for (int trial = 0; trial < 4; ++trial) {
      // Few distinct values, so the maximum appears several times (bf16 ties, as random-weight
      // models produce); trial 3 puts it only in the last slot.
      auto logits = random_bf16(size_t(n), 1.0f);
      for (auto& v : logits) v = __float2bfloat16(std::round(__bfloat162float(v) * 4.0f));
      if (trial == 3) {
        for (auto& v : logits) v = __float2bfloat16(-1.0f);
        logits.back() = __float2bfloat16(2.0f);
      }
      int64_t want = 0;
      for (int64_t i = 1; i < n; ++i) {
        if (__bfloat162float(logits[size_t(i)]) > __bfloat162float(logits[size_t(want)])) want = i;
      }
      auto d_logits = to_device(logits);
      const int32_t start_position = 7 + trial;
      auto d_position = to_device(std::vector<int32_t>{start_position});
      auto d_token = to_device(std::vector<int32_t>{-1});
      auto d_history = to_device(std::vector<int32_t>(32, -1));
      // Twice: the second call checks that the counter was left at zero.
      for (int call = 0; call < 2; ++call) {
        cuda::argmax_and_advance(d_logits.get(), n, d_token.get<int32_t>(),
                                 d_history.get<int32_t>(), d_position.get<int32_t>(), scratch,
                                 nullptr);
      }
      const auto token = to_host<int32_t>(d_token, 1)[0];
      const auto position = to_host<int32_t>(d_position, 1)[0];
      const auto history = to_host<int32_t>(d_history, 32);
      GPU_EXPECT(token == want && position == start_position + 2 &&
                     history[size_t(start_position)] == want &&
                     history[size_t(start_position + 1)] == want,
                 "n=%lld trial %d: token %d (want %lld), position %d (want %d), history %d %d",
                 (long long)n, trial, token, (long long)want, position, start_position + 2,
                 history[size_t(start_position)], history[size_t(start_position + 1)]);
    }
  }
}

}  // namespace
}  // namespace nibble::gpu_test
