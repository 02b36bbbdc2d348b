#pragma once
// Dense GEMMs through cuBLASLt: bf16 × bf16 and fp8 e4m3 × e4m3 with bf16 out and f32
// accumulation, and int8 × int8 with int32 out (exact integer accumulation).
//
// Every nibble linear is y[M, N] = x[M, K] · W[N, K]ᵀ with row-major x, W and y (PyTorch
// orientation). In cuBLAS's column-major terms that is yᵀ = W · xᵀ with W as the transposed
// operand: the "TN" layout, the only one cuBLASLt accepts for fp8 on Hopper, so one mapping
// serves both types. Plans (descriptors + the heuristic's algorithm) are cached per shape: the
// heuristic query costs tens of microseconds, as much as a decode-sized GEMM.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backend/cuda/device_buffer.h"

namespace nibble::cuda {

enum class LtScaleMode : uint8_t {
  None,         // scale 1
  Scalar,       // one f32 on the device (per-tensor)
  OuterVector,  // one f32 per row of W (per-channel) or per row of x (per-token)
};

struct LtProblem {
  int64_t m = 0;  // rows of x and y (tokens)
  int64_t n = 0;  // rows of W, columns of y (out features)
  int64_t k = 0;  // inner dimension
  // CUDA_R_16BF, CUDA_R_8F_E4M3 (x and W alike; y bf16) or CUDA_R_8I (y int32, no scales)
  cudaDataType_t input_type = CUDA_R_16BF;
  const void* x = nullptr;
  int64_t ldx = 0;  // elements between rows of x
  const void* w = nullptr;
  int64_t ldw = 0;
  void* y = nullptr;  // bf16 (int32 for int8 inputs)
  int64_t ldy = 0;
  // fp8 only: y = (x · Wᵀ) ⊙ (x_scale ⊗ w_scale).
  const float* x_scale = nullptr;
  LtScaleMode x_scale_mode = LtScaleMode::None;
  const float* w_scale = nullptr;
  LtScaleMode w_scale_mode = LtScaleMode::None;
  // fp8 only: let the tensor cores accumulate in their faster, less precise mode.
  bool fast_accum = false;
};

class LtGemm {
 public:
  explicit LtGemm(size_t workspace_bytes = size_t(32) << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Runs the product; false when cuBLASLt has no algorithm for it (the caller falls back).
  // Errors from cuBLASLt other than "not supported" throw.
  bool try_matmul(const LtProblem& problem, cudaStream_t stream);
  // As try_matmul, but a missing algorithm is an Error naming the shape.
  void matmul(const LtProblem& problem, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int64_t, int64_t, int64_t, int, int, bool,
                         int, int, int>;
  Plan* plan_for(const LtProblem& problem);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

// y[M, N] = x[M, K] · W[N, K]ᵀ in bf16 (contiguous rows).
void dense_gemm_bf16(LtGemm& lt, const void* x, const void* w, void* y, int64_t m, int64_t n,
                     int64_t k, cudaStream_t stream);

}  // namespace nibble::cuda
