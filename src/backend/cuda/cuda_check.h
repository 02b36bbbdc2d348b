#pragma once
// Error checks for CUDA runtime and cuBLASLt calls. A failing call becomes a nibble::Error that
// names the call and the code's string, so a GPU failure reads like any other nibble error.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define NIBBLE_CUDA_CHECK(expr)                                                          \
  do {                                                                                   \
    const cudaError_t nibble_cuda_status_ = (expr);                                      \
    if (nibble_cuda_status_ != cudaSuccess) {                                            \
      ::nibble::fail("{} failed: {} ({})", #expr, cudaGetErrorName(nibble_cuda_status_), \
                     cudaGetErrorString(nibble_cuda_status_));                           \
    }                                                                                    \
  } while (0)

#define NIBBLE_CUBLAS_CHECK(expr)                              \
  do {                                                         \
    const cublasStatus_t nibble_cublas_status_ = (expr);       \
    if (nibble_cublas_status_ != CUBLAS_STATUS_SUCCESS) {      \
      ::nibble::fail("{} failed: cuBLAS status {}", #expr,     \
                     static_cast<int>(nibble_cublas_status_)); \
    }                                                          \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface
// at the next synchronizing call).
#define NIBBLE_CUDA_CHECK_LAUNCH(what) NIBBLE_CUDA_CHECK(cudaGetLastError())
