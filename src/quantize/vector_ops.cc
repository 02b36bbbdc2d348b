#include "quantize/vector_ops.h"

#include <cstring>

namespace nibble::quantize {
namespace {

// Four independent lanes: a reduction the compiler may keep in one vector register without
// reassociating (which strict IEEE mode forbids it to do on a plain sum).
typedef double Lanes __attribute__((vector_size(32)));

}  // namespace

#if defined(__x86_64__)
#define NIBBLE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NIBBLE_CLONES
#endif

NIBBLE_CLONES double dot(const double* a, const double* b, int64_t n) {
  Lanes acc0 = {0, 0, 0, 0}, acc1 = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Lanes a0, b0, a1, b1;
    std::memcpy(&a0, a + i, sizeof(Lanes));
    std::memcpy(&b0, b + i, sizeof(Lanes));
    std::memcpy(&a1, a + i + 4, sizeof(Lanes));
    std::memcpy(&b1, b + i + 4, sizeof(Lanes));
    acc0 += a0 * b0;
    acc1 += a1 * b1;
  }
  const Lanes acc = acc0 + acc1;
  double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

NIBBLE_CLONES void sub_scaled(double* y, const double* x, double c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= c * x[i];
}

}  // namespace nibble::quantize
