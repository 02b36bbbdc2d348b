#pragma once
// A small self-contained harness for the GPU tests (the GPU machine may lack GoogleTest): tests
// register themselves, main() runs them (optionally filtered) and returns nonzero on failure.
// Inputs are fresh random data each run; the seed is printed (NIBBLE_GPU_SEED repeats a run).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/device_buffer.h"

namespace nibble::gpu_test {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

std::vector<TestCase>& registry();
// Records a failure of the running test (printed at once).
void record_failure(const std::string& message);
std::mt19937_64& rng();

struct Register {
  Register(const char* name, std::function<void()> body) {
    registry().push_back({name, std::move(body)});
  }
};

#define GPU_TEST(name)                                                        \
  static void name();                                                         \
  static const ::nibble::gpu_test::Register name##_registration{#name, name}; \
  static void name()

#define GPU_EXPECT(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      char gpu_expect_buffer_[512];                                                       \
      std::snprintf(gpu_expect_buffer_, sizeof(gpu_expect_buffer_), __VA_ARGS__);         \
      ::nibble::gpu_test::record_failure(std::string(#cond) + ": " + gpu_expect_buffer_); \
    }                                                                                     \
  } while (0)

inline float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Random bf16 values (as bits) in [-range, range], never all zero.
inline std::vector<__nv_bfloat16> random_bf16(size_t count, float range) {
  std::uniform_real_distribution<float> dist(-range, range);
  std::vector<__nv_bfloat16> out(count);
  for (auto& v : out) v = __float2bfloat16_rn(dist(rng()));
  return out;
}

inline std::vector<float> random_floats(size_t count, float range) {
  std::uniform_real_distribution<float> dist(-range, range);
  std::vector<float> out(count);
  for (auto& v : out) v = dist(rng());
  return out;
}

template <typename T>
cuda::DeviceBuffer to_device(const std::vector<T>& host) {
  cuda::DeviceBuffer buffer(host.size() * sizeof(T));
  buffer.upload(host.data(), buffer.bytes());
  return buffer;
}

template <typename T>
std::vector<T> to_host(const cuda::DeviceBuffer& buffer, size_t count) {
  std::vector<T> host(count);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  NIBBLE_CUDA_CHECK(
      cudaMemcpy(host.data(), buffer.get(), count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// Fills with 0xFF bytes: NaN in bf16/f32, so an unwritten element fails every bound.
inline void poison(cuda::DeviceBuffer& buffer) {
  NIBBLE_CUDA_CHECK(cudaMemset(buffer.get(), 0xFF, buffer.bytes()));
}

// ref[m][n] = Σ_k x[m][k] · w[n][k] in f64, and absdot = Σ_k |x · w| (the scale of the rounding
// error any f32 accumulation order can make).
struct Reference {
  std::vector<double> value, absdot;
};
Reference reference_matmul(const std::vector<float>& x, const std::vector<float>& w, int64_t m,
                           int64_t n, int64_t k);

// Checks |y - ref| ≤ rel·|ref| + abs·absdot for every element (NaN fails) and reports the
// largest error in units of the bound and the relative Frobenius error.
void expect_close(const std::string& what, const std::vector<__nv_bfloat16>& y,
                  const Reference& ref, double rel, double abs);

}  // namespace nibble::gpu_test
