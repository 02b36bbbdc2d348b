#include "backend/cuda/fp8_linear.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quant/reference/dequantize.h"
#include "quant/types.h"

namespace nibble::cuda {
namespace {

constexpr int kQuantThreads = 256;

__device__ __forceinline__ uint8_t to_e4m3(float v) {
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// One CTA per row: amax by warp shuffles, then the codes.
__global__ void quantize_per_token_kernel(const __nv_bfloat16* x, int64_t k, int64_t ld_out,
                                          uint8_t* codes, float* scales) {
  __shared__ float warp_max[kQuantThreads / 32];
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* src = x + row * k;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += kQuantThreads) {
    amax = fmaxf(amax, fabsf(__bfloat162float(src[i])));
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
  }
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0.0f;
  for (int w = 0; w < kQuantThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  if (threadIdx.x == 0) scales[row] = scale;
  uint8_t* dst = codes + row * ld_out;
  for (int64_t i = threadIdx.x; i < ld_out; i += kQuantThreads) {
    dst[i] = i < k ? to_e4m3(__bfloat162float(src[i]) / scale) : uint8_t(0);
  }
}

__global__ void quantize_static_kernel(const __nv_bfloat16* x, int64_t m, int64_t k, int64_t ld_out,
                                       const float* scale, uint8_t* codes) {
  const float s = *scale;
  const int64_t total = m * ld_out;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / ld_out, col = i % ld_out;
    codes[i] = col < k ? to_e4m3(__bfloat162float(x[row * k + col]) / s) : uint8_t(0);
  }
}

// The fallback epilogue: y[m][n] *= x_scale[m or 0] · w_scale[n or 0].
__global__ void scale_output_kernel(__nv_bfloat16* y, int64_t m, int64_t n, const float* x_scale,
                                    bool x_per_token, const float* w_scale, bool w_per_channel) {
  const int64_t total = m * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / n, col = i % n;
    const float s = x_scale[x_per_token ? row : 0] * w_scale[w_per_channel ? col : 0];
    y[i] = __float2bfloat16(__bfloat162float(y[i]) * s);
  }
}

// The same products eight columns at a time (16-byte loads and stores; N a multiple of 8, one
// row per grid row): the scalar loop above paid a 64-bit division per element and ran at a
// fraction of the bandwidth on M = 2048 outputs.
__global__ void scale_output_vec8_kernel(__nv_bfloat16* y, int64_t n, const float* x_scale,
                                         bool x_per_token, const float* w_scale,
                                         bool w_per_channel) {
  const int64_t row = blockIdx.y;
  const int64_t col = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (col >= n) return;
  const float xs = x_scale[x_per_token ? row : 0];
  uint4* at = reinterpret_cast<uint4*>(y + row * n + col);
  uint4 v = *at;
  auto* e = reinterpret_cast<__nv_bfloat16*>(&v);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float s = xs * w_scale[w_per_channel ? col + j : 0];
    e[j] = __float2bfloat16(__bfloat162float(e[j]) * s);
  }
  *at = v;
}

unsigned grid_for(int64_t total, int threads) {
  return unsigned(std::min<int64_t>((total + threads - 1) / threads, 65535));
}

}  // namespace

Fp8Weight prepare_fp8_weight(const quant::QuantizedTensor& t, const char* what) {
  quant::validate(t, what);
  NIBBLE_CHECK(t.elem == quant::ElemType::Fp8E4M3,
               "{}: the CUDA fp8 kernel takes fp8_e4m3 codes, not {}", what,
               quant::elem_name(t.elem));
  const auto granularity = t.granularity();
  NIBBLE_CHECK(granularity == quant::ScaleGranularity::PerTensor ||
                   granularity == quant::ScaleGranularity::PerChannel,
               "{}: {} fp8 weight scales are not supported by the CUDA fp8 kernel yet (per-tensor "
               "or per-channel)",
               what, quant::granularity_name(granularity));
  Fp8Weight w;
  w.rows = t.rows;
  w.cols = t.cols;
  w.padded_cols = (t.cols + 15) / 16 * 16;
  w.padded_rows = (t.rows + 15) / 16 * 16;
  w.per_channel = granularity == quant::ScaleGranularity::PerChannel;
  std::vector<uint8_t> codes(size_t(w.padded_rows * w.padded_cols), 0);
  for (int64_t n = 0; n < t.rows; ++n) {
    std::memcpy(codes.data() + n * w.padded_cols, t.codes.data() + n * t.row_bytes, size_t(t.cols));
  }
  w.codes.resize(codes.size());
  w.codes.upload(codes.data(), codes.size());
  std::vector<float> scales(w.per_channel ? size_t(w.padded_rows) : 1, 1.0f);
  for (size_t i = 0; i < (w.per_channel ? size_t(t.rows) : 1); ++i) {
    scales[i] = t.scales[i] * t.global_scale;
  }
  w.scales.resize(scales.size() * sizeof(float));
  w.scales.upload(scales.data(), w.scales.bytes());
  return w;
}

void quantize_fp8_per_token(const void* x, int64_t m, int64_t k, int64_t ld_out, uint8_t* codes,
                            float* scales, cudaStream_t stream) {
  quantize_per_token_kernel<<<unsigned(m), kQuantThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), k, ld_out, codes, scales);
  NIBBLE_CUDA_CHECK_LAUNCH("quantize_per_token_kernel");
}

void quantize_fp8_static(const void* x, int64_t m, int64_t k, int64_t ld_out, const float* scale,
                         uint8_t* codes, cudaStream_t stream) {
  quantize_static_kernel<<<grid_for(m * ld_out, kQuantThreads), kQuantThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), m, k, ld_out, scale, codes);
  NIBBLE_CUDA_CHECK_LAUNCH("quantize_static_kernel");
}

bool fp8_gemm(LtGemm& lt, const Fp8Weight& w, const uint8_t* x_codes, const float* x_scale,
              bool x_per_token, int64_t m, void* y, bool fast_accum, Fp8Workspace& ws,
              cudaStream_t stream) {
  const bool padded = w.padded_rows != w.rows;
  if (padded) ws.y_padded.ensure(size_t(m * w.padded_rows) * 2);
  void* out = padded ? ws.y_padded.get() : y;
  LtProblem p;
  p.m = m;
  p.n = w.padded_rows;
  p.k = w.padded_cols;
  p.input_type = CUDA_R_8F_E4M3;
  p.x = x_codes;
  p.ldx = w.padded_cols;
  p.w = w.codes.get();
  p.ldw = w.padded_cols;
  p.y = out;
  p.ldy = w.padded_rows;
  p.fast_accum = fast_accum;
  p.x_scale = x_scale;
  p.x_scale_mode = x_per_token ? LtScaleMode::OuterVector : LtScaleMode::Scalar;
  p.w_scale = w.scales.get<const float>();
  p.w_scale_mode = w.per_channel ? LtScaleMode::OuterVector : LtScaleMode::Scalar;
  bool lt_scaled = lt.try_matmul(p, stream);
  if (!lt_scaled) {
    p.x_scale_mode = LtScaleMode::None;
    p.w_scale_mode = LtScaleMode::None;
    lt.matmul(p, stream);
    if (w.padded_rows % 8 == 0 && m <= 65535 && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
      const dim3 grid{unsigned((w.padded_rows / 8 + 255) / 256), unsigned(m), 1u};
      scale_output_vec8_kernel<<<grid, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(out),
                                                         w.padded_rows, x_scale, x_per_token,
                                                         w.scales.get<const float>(),
                                                         w.per_channel);
      NIBBLE_CUDA_CHECK_LAUNCH("scale_output_vec8_kernel");
    } else {
      scale_output_kernel<<<grid_for(m * w.padded_rows, 256), 256, 0, stream>>>(
          static_cast<__nv_bfloat16*>(out), m, w.padded_rows, x_scale, x_per_token,
          w.scales.get<const float>(), w.per_channel);
      NIBBLE_CUDA_CHECK_LAUNCH("scale_output_kernel");
    }
  }
  if (padded) {
    NIBBLE_CUDA_CHECK(cudaMemcpy2DAsync(y, size_t(w.rows) * 2, out, size_t(w.padded_rows) * 2,
                                        size_t(w.rows) * 2, size_t(m), cudaMemcpyDeviceToDevice,
                                        stream));
  }
  return lt_scaled;
}

void fp8_linear(LtGemm& lt, const Fp8Weight& w, const void* x, int64_t m, void* y, Fp8Workspace& ws,
                const Fp8Options& options, cudaStream_t stream) {
  NIBBLE_CHECK(m > 0, "fp8_linear: {} rows of activations", m);
  ws.x_codes.ensure(size_t(m * w.padded_cols));
  ws.x_scales.ensure(size_t(m) * sizeof(float));
  auto* codes = ws.x_codes.get<uint8_t>();
  auto* scales = ws.x_scales.get<float>();
  const bool per_token = options.act == Fp8ActMode::DynamicPerToken;
  if (per_token) {
    quantize_fp8_per_token(x, m, w.cols, w.padded_cols, codes, scales, stream);
  } else {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(scales, &options.input_scale, sizeof(float),
                                      cudaMemcpyHostToDevice, stream));
    quantize_fp8_static(x, m, w.cols, w.padded_cols, scales, codes, stream);
  }
  fp8_gemm(lt, w, codes, scales, per_token, m, y, options.fast_accum, ws, stream);
}

}  // namespace nibble::cuda
