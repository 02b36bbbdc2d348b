#pragma once
// GPTQ on the GPU (Frantar et al. 2022; the same algorithm and grid as quantize/int_quantizer.h,
// which runs it on the host): the Hessian H = Σ xᵀx of a linear's inputs accumulated by cuBLAS,
// the upper Cholesky factor U of the damped inverse by cuSOLVER, and the column loop as one
// kernel per block of ≤ 128 columns plus a DGEMM that carries the block's errors to the columns
// after it (GPTQ's lazy batch update).
//
// Everything after the Hessian runs in double, as the host quantizer does, so both give the same
// codes up to summation order. The column kernel gives each thread one weight row: GPTQ's updates
// never mix rows, so rows need no communication, and the row's block of weights lives in shared
// memory (64 rows × 128 columns of doubles per CTA) while every thread reads the same U entries.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "quant/scheme.h"
#include "quant/types.h"

namespace nibble::cuda {

struct GptqSolverOptions {
  int bits = 4;              // 2, 3, 4 or 8
  int64_t group_size = 128;  // -1: one group per row
  bool symmetric = true;
  int min_zero = 0;  // GPTQ v1 exports ask for zeros ≥ 1 (int_quantizer.h)
  quant::ScaleDType scale_dtype = quant::ScaleDType::F32;  // scales rounded to it first
  double damp_percent = 0.01;                              // of mean(diag(H))
  bool act_order = false;                                  // columns by descending diag(H)
  bool static_groups = false;
  int block_size = 128;  // 1 .. 128
};

// One quantized linear, on the host: unsigned codes with integer zero points (GPTQ's grid).
struct GptqLinearResult {
  int64_t rows = 0, cols = 0;
  int64_t group = 0;           // effective group (cols when per-row)
  std::vector<uint8_t> codes;  // [rows][cols]
  std::vector<float> scales;   // [rows][n_groups]
  std::vector<int32_t> zeros;  // [rows][n_groups]
  std::vector<int32_t> g_idx;  // group of each column (empty when per-row)
  double damp_percent = 0.0;   // the dampening that made H positive definite
  // The canonical tensor the loaders produce (signed codes when every zero is 2^(b−1), trivial
  // g_idx dropped), as quantize_int_gptq returns it.
  quant::QuantizedTensor to_tensor(const GptqSolverOptions& options) const;
};

class CudaGptqSolver {
 public:
  explicit CudaGptqSolver(cudaStream_t stream);
  ~CudaGptqSolver();
  CudaGptqSolver(const CudaGptqSolver&) = delete;
  CudaGptqSolver& operator=(const CudaGptqSolver&) = delete;

  // h[K][K] (f32, device) += xᵀ·x for x[m][K] (bf16, device, row-major). Scaling H does not
  // change GPTQ's result (the dampening is relative), so the plain sum is kept.
  void accumulate_hessian(const __nv_bfloat16* x, int64_t m, int64_t k, float* h);

  // Quantizes w[rows][cols] (bf16, device) with the Hessian h (f32 [cols][cols], device, only
  // read). When w_hat is not null it receives the dequantized weight (bf16 [rows][cols]; may be
  // w itself). Synchronizes the stream.
  GptqLinearResult quantize(const __nv_bfloat16* w, int64_t rows, int64_t cols, const float* h,
                            const GptqSolverOptions& options, __nv_bfloat16* w_hat);

 private:
  // U (row-major [K][K], upper) into u_; returns the dampening used.
  double prepare_hessian(const float* h, int64_t k, const GptqSolverOptions& options,
                         std::vector<int32_t>& perm, std::vector<uint8_t>& dead);

  cudaStream_t stream_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  DeviceBuffer u_, x_, solver_work_, info_, perm_dead_;
  DeviceBuffer wt_, err_, codes_, scales_, zeros_;
};

}  // namespace nibble::cuda
