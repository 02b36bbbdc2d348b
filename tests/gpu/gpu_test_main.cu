// Runs every registered GPU test: `nibble_gpu_tests [name-substring]`.
#include <cstdlib>
#include <exception>

#include "gpu_test_util.h"

namespace nibble::gpu_test {
namespace {
int failures_in_test = 0;
}

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

void record_failure(const std::string& message) {
  ++failures_in_test;
  std::printf("    FAILED: %s\n", message.c_str());
}

std::mt19937_64& rng() {
  static std::mt19937_64 engine = [] {
    const char* env = std::getenv("NIBBLE_GPU_SEED");
    const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("seed %llu (NIBBLE_GPU_SEED=%llu repeats this run)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    return std::mt19937_64(seed);
  }();
  return engine;
}

Reference reference_matmul(const std::vector<float>& x, const std::vector<float>& w, int64_t m,
                           int64_t n, int64_t k) {
  Reference ref;
  ref.value.assign(size_t(m * n), 0.0);
  ref.absdot.assign(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      const float* xr = x.data() + i * k;
      const float* wr = w.data() + j * k;
      for (int64_t l = 0; l < k; ++l) {
        const double p = double(xr[l]) * double(wr[l]);
        sum += p;
        abs_sum += std::fabs(p);
      }
      ref.value[size_t(i * n + j)] = sum;
      ref.absdot[size_t(i * n + j)] = abs_sum;
    }
  }
  return ref;
}

void expect_close(const std::string& what, const std::vector<__nv_bfloat16>& y,
                  const Reference& ref, double rel, double abs) {
  double worst = 0.0, err2 = 0.0, ref2 = 0.0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double v = __bfloat162float(y[i]);
    const double err = std::fabs(v - ref.value[i]);
    const double bound = rel * std::fabs(ref.value[i]) + abs * ref.absdot[i] + 1e-30;
    if (!(err <= bound)) {
      if (bad++ == 0) first_bad = i;
    }
    if (std::isfinite(err)) {
      worst = std::max(worst, err / bound);
      err2 += err * err;
    }
    ref2 += ref.value[i] * ref.value[i];
  }
  const double fro = std::sqrt(err2 / std::max(ref2, 1e-300));
  std::printf("    %-58s max err/bound %.3f  rel-fro %.2e\n", what.c_str(), worst, fro);
  GPU_EXPECT(bad == 0,
             "%s: %zu of %zu outside |err| <= %.3g|ref| + %.3g absdot; first at %zu: "
             "got %g, ref %g",
             what.c_str(), bad, y.size(), rel, abs, first_bad,
             double(__bfloat162float(y[first_bad])), ref.value[first_bad]);
}

}  // namespace nibble::gpu_test

int main(int argc, char** argv) {
  using namespace nibble::gpu_test;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    std::printf("no CUDA device\n");
    return 2;
  }
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  rng();
  int failed_tests = 0, run = 0;
  for (const auto& test : registry()) {
    if (filter && std::string(test.name).find(filter) == std::string::npos) continue;
    ++run;
    failures_in_test = 0;
    std::printf("[ RUN  ] %s\n", test.name);
    try {
      test.body();
      const cudaError_t status = cudaDeviceSynchronize();
      if (status != cudaSuccess) record_failure(cudaGetErrorString(status));
    } catch (const std::exception& e) {
      record_failure(std::string("exception: ") + e.what());
    }
    std::printf("[ %s ] %s\n", failures_in_test == 0 ? " OK " : "FAIL", test.name);
    if (failures_in_test > 0) ++failed_tests;
  }
  std::printf("%d of %d GPU tests passed\n", run - failed_tests, run);
  return failed_tests == 0 ? 0 : 1;
}
